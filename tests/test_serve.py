"""minigpt2 serve, driven over loopback by the official openai client (and httpx for raw HTTP).

The model is the bundled tiny-shakespeare; every text is compared with model.generate on the
same model, run alone.
"""

import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'minigpt2[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'minigpt2[serve]'")
openai = pytest.importorskip("openai", reason="the serve tests drive the server with the openai client")
httpx = pytest.importorskip("httpx", reason="httpx comes with the openai client")

from minigpt2 import GPT2LMHeadModel, GPT2Tokenizer  # noqa: E402
from minigpt2.serve.batcher import Job  # noqa: E402
from serve_helpers import MODEL_FOLDER, MODEL_NAME, running_server  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    return GPT2LMHeadModel.from_pretrained(MODEL_FOLDER), GPT2Tokenizer.from_pretrained(MODEL_FOLDER)


@pytest.fixture(scope="module")
def server(loaded):
    with running_server(*loaded, max_batch=4) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def expected_text(loaded, prompt, max_tokens, temperature=0.0, seed=None, top_k=0, top_p=1.0):
    """What model.generate continues `prompt` with, alone (EOS ends it and is not text)."""
    model, tok = loaded
    ids = tok.encode(prompt)
    out = model.generate([ids], max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=temperature or 1.0,
                         seed=seed, top_k=top_k, top_p=top_p, eos_token_id=tok.eos_token_id)[0, len(ids):].tolist()
    if tok.eos_token_id in out:
        out = out[:out.index(tok.eos_token_id)]
    return tok.decode(out)


def test_greedy_equals_model_generate(client, loaded):
    reply = client.completions.create(model=MODEL_NAME, prompt="ROMEO:", max_tokens=40, temperature=0)
    assert reply.choices[0].text == expected_text(loaded, "ROMEO:", 40)
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (3, 40, 43)


def test_seeded_sampling_equals_model_generate(client, loaded):
    reply = client.completions.create(model=MODEL_NAME, prompt="JULIET:", max_tokens=30, temperature=0.8,
                                      top_p=0.9, seed=7, extra_body={"top_k": 20})
    assert reply.choices[0].text == expected_text(loaded, "JULIET:", 30, 0.8, seed=7, top_k=20, top_p=0.9)


def test_streamed_chunks_join_to_the_whole_text(client):
    kwargs = dict(model=MODEL_NAME, prompt="First Citizen:\n", max_tokens=30, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert len(chunks) > 10
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_eight_concurrent_clients_each_get_their_single_run_text(server, loaded):
    """8 clients against max_batch 4: rows join mid-way, wait in the queue, leave at different steps."""
    url, app = server
    prompts = ["ROMEO:", "To be, or not to be", "KING HENRY", "O", "Now is the winter of", "Good morrow,",
               "MENENIUS:\nWhat work's, my countrymen", "Hark"]
    specs = [dict(prompt=p, max_tokens=12 + 5 * i, temperature=0.0 if i % 2 == 0 else 0.9, seed=100 + i)
             for i, p in enumerate(prompts)]
    texts, errors = {}, []

    def run(i):
        try:
            time.sleep(0.05 * i)                     # staggered: later rows join a running batch
            c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            texts[i] = c.completions.create(model=MODEL_NAME, **specs[i]).choices[0].text
        except Exception as error:                   # reported below, with the client's number
            errors.append((i, error))
    steps_before = app.state.server.batcher.steps
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, spec in enumerate(specs):
        assert texts[i] == expected_text(loaded, spec["prompt"], spec["max_tokens"], spec["temperature"],
                                         seed=spec["seed"]), f"client {i}"
    # batched: far fewer decode steps than tokens
    n_tokens = sum(s["max_tokens"] for s in specs)
    assert app.state.server.batcher.steps - steps_before < n_tokens * 0.6


def test_a_dropped_stream_frees_its_row_and_the_server_keeps_answering(server, client, loaded):
    url, app = server
    with httpx.stream("POST", url + "/v1/completions", json={
            "model": MODEL_NAME, "prompt": "ROMEO:", "max_tokens": 200, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    # the row leaves within a few steps of the disconnect, long before its 200 tokens
    deadline = time.monotonic() + 10
    while app.state.server.batcher.n_active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.server.batcher.n_active == 0
    assert httpx.get(url + "/health").json()["status"] == "ok"
    reply = client.completions.create(model=MODEL_NAME, prompt="ROMEO:", max_tokens=10, temperature=0)
    assert reply.choices[0].text == expected_text(loaded, "ROMEO:", 10)


def test_prompt_forms_n_echo_stop_logprobs(client, loaded):
    model, tok = loaded
    ids = tok.encode("KING:")
    reply = client.completions.create(model=MODEL_NAME, prompt=["ROMEO:", ids], max_tokens=8, temperature=0, n=2)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text == expected_text(loaded, "ROMEO:", 8)
    assert reply.choices[2].text == expected_text(loaded, "KING:", 8)

    reply = client.completions.create(model=MODEL_NAME, prompt="ROMEO:", max_tokens=6, temperature=0,
                                      echo=True, logprobs=3)
    lp = reply.choices[0].logprobs
    assert reply.choices[0].text == "ROMEO:" + expected_text(loaded, "ROMEO:", 6)
    assert lp.token_logprobs[0] is None and len(lp.tokens) == 3 + 6
    assert "".join(lp.tokens) == reply.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens[3:], lp.token_logprobs[3:], lp.top_logprobs[3:]):
        assert len(top) == 3 and top[token] == pytest.approx(logprob)       # greedy: the top one
        assert max(top.values()) == pytest.approx(logprob) and logprob < 0

    full = expected_text(loaded, "ROMEO:", 20)
    stop = full[5:8]
    reply = client.completions.create(model=MODEL_NAME, prompt="ROMEO:", max_tokens=20, temperature=0, stop=stop)
    assert reply.choices[0].text == full[:full.index(stop)] and reply.choices[0].finish_reason == "stop"


def test_models_health_tokenize_detokenize(server, client):
    url, _ = server
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    assert httpx.get(url + "/health").json()["status"] == "ok"
    ids = httpx.post(url + "/tokenize", json={"prompt": "Hello world"}).json()["tokens"]
    assert ids == [15496, 995]
    assert httpx.post(url + "/detokenize", json={"tokens": ids}).json() == {"prompt": "Hello world"}


def error_of(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("body, param", [
    ({"prompt": "a", "temperature": 5}, "temperature"),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "a", "top_p": "high"}, "top_p"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": [50257]}, "prompt"),
    ({"prompt": "a", "stop": ["", "x"]}, "stop"),
    ({"prompt": "a", "logprobs": 99}, "logprobs"),
    ({"prompt": "a", "presence_penalty": 0.5, "suffix": "x"}, "presence_penalty"),
    ({"prompt": "a", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "a " * 250, "max_tokens": 20}, "max_tokens"),
    ({}, "prompt"),
])
def test_bad_fields_are_400_naming_them(server, body, param):
    error = error_of(httpx.post(server[0] + "/v1/completions", json={"model": MODEL_NAME, **body}), 400)
    assert error["param"] == param and param in error["message"] or param == "prompt"
    if "presence_penalty" in body:                   # every unsupported field is named
        assert "presence_penalty" in error["message"] and "suffix" in error["message"]


def test_errors_bad_json_unknown_model_context_body_limit(server):
    url, _ = server
    assert error_of(httpx.post(url + "/v1/completions", content=b"{not json"), 400)["code"] == "invalid_json"
    assert error_of(httpx.post(url + "/v1/completions", json=[1, 2]), 400)
    assert error_of(httpx.post(url + "/v1/completions", json={"model": "gpt-4", "prompt": "a"}), 404)["param"] == "model"
    error = error_of(httpx.post(url + "/v1/completions", json={"model": MODEL_NAME, "prompt": "a " * 250,
                                                              "max_tokens": 20}), 400)
    assert error["code"] == "context_length_exceeded"
    big = b'{"model": "x", "prompt": "' + b"a" * (2 << 20) + b'"}'
    assert error_of(httpx.post(url + "/v1/completions", content=big), 413)["code"] == "body_too_large"
    assert error_of(httpx.get(url + "/v1/nothing"), 404)
    assert error_of(httpx.get(url + "/v1/completions"), 405)
    assert error_of(httpx.post(url + "/tokenize", json={"text": "a"}), 400)["param"] == "prompt"
    assert error_of(httpx.post(url + "/detokenize", json={"tokens": [-1]}), 400)["param"] == "tokens"
    assert httpx.get(url + "/health").json()["status"] == "ok"       # still alive after all of it


def test_openai_client_sees_the_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="davinci", prompt="a")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=MODEL_NAME, prompt="a", temperature=9)


def test_api_key_and_a_full_queue(loaded):
    with running_server(*loaded, api_key="sesame", max_batch=1, max_queue=1) as (url, app):
        body = {"model": MODEL_NAME, "prompt": "ROMEO:", "max_tokens": 3, "temperature": 0}
        assert error_of(httpx.post(url + "/v1/completions", json=body), 401)["type"] == "authentication_error"
        assert error_of(httpx.get(url + "/v1/models", headers={"Authorization": "Bearer nope"}), 401)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(**body).choices[0].text

        # one row decoding, one job waiting: the queue (max 1) is full
        batcher = app.state.server.batcher
        prompt = loaded[1].encode("ROMEO:")
        running, waiting = (Job(prompt, 200, lambda e: None, temperature=0) for _ in range(2))
        batcher.submit(running)
        deadline = time.monotonic() + 30
        while (batcher.n_active, batcher.n_waiting) != (1, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (batcher.n_active, batcher.n_waiting) == (1, 0), (batcher.rows, list(batcher.waiting))
        batcher.submit(waiting)
        with pytest.raises(openai.APIStatusError) as raised:
            good.completions.create(**body)
        assert raised.value.status_code == 503
        assert raised.value.body["code"] == "queue_full"
        running.cancel(), waiting.cancel()
        assert good.completions.create(**body).choices[0].text               # served again


def test_the_page_and_its_files_are_served(server):
    url, _ = server
    page = httpx.get(url + "/")
    assert page.status_code == 200 and 'id="editor"' in page.text
    assert "http://" not in page.text and "https://" not in page.text      # no CDN: works offline
    assert httpx.get(url + "/static/page.js").status_code == 200


def test_batcher_greedy_rows_match_generate_through_compaction(loaded):
    """Long rows overflow the shared offset (n_positions 256), so the cache compacts mid-way."""
    from minigpt2.serve.batcher import Batcher, TokenEvent, run_alone

    model, tok = loaded
    base = tok.encode("First Citizen:\nBefore we proceed any further, hear me speak. " * 8)
    specs = [(base[:20], 200), (base[:100], 120), (base[:5], 150), (base[:60], 190)]
    batcher = Batcher(model, tok, max_batch=3).start()
    got = {}

    def run(i, ids, n):
        time.sleep(0.2 * i)
        got[i] = [e.token_id for e in run_alone(batcher, Job(ids, n, None, temperature=0)) if isinstance(e, TokenEvent)]
    threads = [threading.Thread(target=run, args=(i, *spec)) for i, spec in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.stop()
    for i, (ids, n) in enumerate(specs):
        want = model.generate([ids], max_new_tokens=n, eos_token_id=tok.eos_token_id)[0, len(ids):]
        assert np.array_equal(got[i], want[:len(got[i])]), f"row {i}"


def test_batcher_survives_a_failing_job(loaded):
    """A job that breaks the model (an id past the vocabulary) fails alone; the loop goes on."""
    from minigpt2.serve.batcher import Batcher, DoneEvent, run_alone

    model, tok = loaded
    batcher = Batcher(model, tok, max_batch=2).start()
    try:
        broken = run_alone(batcher, Job([model.config.vocab_size + 5], 4, None, temperature=0))
        assert isinstance(broken[-1], DoneEvent) and broken[-1].finish_reason == "error"
        fine = run_alone(batcher, Job(tok.encode("ROMEO:"), 4, None, temperature=0))
        assert fine[-1].finish_reason == "length" and fine[-1].n_tokens == 4
    finally:
        batcher.stop()
