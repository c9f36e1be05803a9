"""The generate, score and info commands (and tokenize, when present) end to end on a small
random model folder with the real 50257-token vocabulary; no torch needed."""

import re

import numpy as np
import pytest

from minigpt2 import cli
from minigpt2.weights import hub
from minigpt2.generate import generate
from minigpt2.model import GPT2LMHeadModel
from minigpt2.scoring import score
from minigpt2.tokenizer import GPT2Tokenizer

from generation_helpers import write_random_model

PROMPT = "Alan Turing theorized that"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return str(write_random_model(tmp_path_factory.mktemp("tiny-model"), seed=3))


@pytest.fixture(scope="module")
def loaded(model_folder):
    return GPT2LMHeadModel.from_pretrained(model_folder, backend="numpy"), GPT2Tokenizer.from_pretrained(model_folder)


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_greedy_streams_what_the_library_generates(capsys, model_folder, loaded):
    model, tok = loaded
    ids = tok.encode(PROMPT)
    expected = generate(model, [ids], max_new_tokens=12, eos_token_id=None)[0, len(ids):]
    # default backend (numba): the command must print the same text as the numpy library call
    code, out, err = run_cli(capsys, "generate", PROMPT, "--model", model_folder, "--greedy", "--max-new-tokens", 12)
    assert code == 0
    assert out == PROMPT + tok.decode(expected) + "\n"
    assert re.fullmatch(r"prompt: 5 tokens, [\d.]+ tokens/s \| generated: 12 tokens, [\d.]+ tokens/s\n", err)


def test_generate_sampling_is_seeded_and_timing_details(capsys, model_folder):
    args = ("generate", PROMPT, "--model", model_folder, "--backend", "numpy", "--max-new-tokens", 10,
            "--temperature", 0.8, "--top-k", 20, "--top-p", 0.9, "--repetition-penalty", 1.2)
    first = run_cli(capsys, *args, "--seed", 7)
    again = run_cli(capsys, *args, "--seed", 7, "--timing")
    assert first[0] == again[0] == 0 and first[1] == again[1]
    assert "ms/token" in again[2] and "load" in again[2]


def test_generate_stop_string(capsys, model_folder, loaded):
    model, tok = loaded
    ids = tok.encode(PROMPT)
    free = tok.decode(generate(model, [ids], max_new_tokens=12, eos_token_id=None)[0, len(ids):])
    stop = free[4:7]                                      # some text from the middle of the continuation
    code, out, _ = run_cli(capsys, "generate", PROMPT, "--model", model_folder, "--backend", "numpy",
                           "--greedy", "--max-new-tokens", 12, "--stop", stop)
    assert code == 0 and out == PROMPT + free[: free.find(stop)] + "\n"


def test_score_matches_the_library(capsys, model_folder, loaded):
    model, tok = loaded
    text = "The quick brown fox jumps over the lazy dog. " * 3
    expected = score(model, tok.encode(text))
    code, out, _ = run_cli(capsys, "score", "--text", text, "--model", model_folder, "--backend", "numpy", "--per-token")
    assert code == 0
    value = float(re.search(r"perplexity: ([\d.]+)", out).group(1))
    np.testing.assert_allclose(value, expected.perplexity, rtol=1e-4)
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+\d+\s+-?[\d.]+\s+'", line)]
    assert len(rows) == expected.logprobs.size == len(tok.encode(text)) - 1


def test_score_long_file_uses_windows(capsys, tmp_path, model_folder, loaded):
    model, tok = loaded
    path = tmp_path / "long.txt"
    path.write_text("To be, or not to be, that is the question. " * 20, encoding="utf-8")
    expected = score(model, tok.encode(path.read_text(encoding="utf-8")), stride=16)
    code, out, _ = run_cli(capsys, "score", "--file", path, "--model", model_folder, "--backend", "numpy", "--stride", 16)
    assert code == 0 and expected.n_windows > 1 and f"{expected.n_windows} windows" in out
    np.testing.assert_allclose(float(re.search(r"perplexity: ([\d.]+)", out).group(1)), expected.perplexity, rtol=1e-4)


def test_info(capsys, model_folder):
    code, out, _ = run_cli(capsys, "info", "--model", model_folder)
    assert code == 0
    # wte 50257*16 + wpe 64*16 + 2 blocks of (4*16 ln + 16*48+48 + 16*16+16 + 16*64+64 + 64*16+16) + ln_f 32
    block = 4 * 16 + 16 * 48 + 48 + 16 * 16 + 16 + 16 * 64 + 64 + 64 * 16 + 16
    n_params = 50257 * 16 + 64 * 16 + 2 * block + 32
    assert f"parameters: {n_params:,}" in out
    assert "n_embd: 16" in out and "model.safetensors" in out and "config.json" in out
    code, out, _ = run_cli(capsys, "info")
    assert code == 0 and "gpt2-medium" in out and "bundled models:" in out


def test_tokenize(capsys):
    code, out, _ = run_cli(capsys, "tokenize", "Hello world")
    assert code == 0 and "15496" in out and "995" in out


def test_default_model_falls_back_to_the_bundled_demo_when_offline(capsys, monkeypatch, tmp_path, model_folder):
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(name, **kwargs):
        raise hub.HubError(f"cannot download https://huggingface.co/{name} (Name or service not known). No network?")

    monkeypatch.setattr(hub, "download_model", no_network)
    monkeypatch.setattr(cli.common, "FALLBACK_MODEL", model_folder)   # stands in for the bundled demo model
    code, out, err = run_cli(capsys, "generate", "Hi", "--backend", "numpy", "--max-new-tokens", 3, "--greedy")
    assert code == 0 and out.startswith("Hi")
    notes = [line for line in err.splitlines() if "demo model" in line]
    assert len(notes) == 1 and "Name or service not known" in notes[0]   # the reason, in one short line


@pytest.mark.parametrize("argv, message", [
    (["generate", PROMPT, "--max-new-tokens", 100], "n_positions"),
    (["generate", PROMPT, "--top-p", 2], "top_p"),
    (["score", "--text", "Hi"], "at least 2"),
    (["score", "--file", "/nonexistent/file.txt"], "No such file"),
    (["info", "--model", "/nonexistent/folder"], "nonexistent"),
])
def test_errors_are_one_line_without_traceback(capsys, model_folder, argv, message):
    if argv[0] != "info":
        argv = argv + ["--model", model_folder, "--backend", "numpy"]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0 and out == ""                         # not even the prompt: checks come first
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_help_has_examples(capsys):
    for command in ("generate", "score", "info"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_default_model_offline_runs_the_real_bundled_demo(capsys, monkeypatch, tmp_path):
    assert cli.FALLBACK_MODEL in hub.bundled_models()
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(capsys, "generate", "ROMEO:", "--max-new-tokens", 8, "--seed", 0)
    assert code == 0 and out.startswith("ROMEO:")
    assert sum("demo model" in line for line in err.splitlines()) == 1


def test_generate_zero_new_tokens_and_empty_prompt(capsys, model_folder):
    code, out, err = run_cli(capsys, "generate", PROMPT, "--model", model_folder, "--backend", "numpy",
                             "--max-new-tokens", 0)
    assert code == 0 and out == PROMPT + "\n" and "generated: 0 tokens" in err
    # an empty prompt starts from <|endoftext|>, as GPT-2's unconditional samples do
    code, out, _ = run_cli(capsys, "generate", "", "--model", model_folder, "--backend", "numpy",
                           "--max-new-tokens", 3, "--greedy")
    assert code == 0 and len(out) > 1


def test_score_with_matmul_precision_medium(capsys, tmp_path):
    """--matmul-precision medium reaches the kernels (on an AMX machine the perplexity moves by a
    bfloat16-sized amount; elsewhere it is unchanged) and a bad value is refused by argparse."""
    from minigpt2 import bench, engine
    from minigpt2.engine import amx
    from minigpt2.config import GPT2Config
    from minigpt2.tokenizer import GPT2Tokenizer

    folder = bench.write_random_checkpoint(tmp_path / "m", "cli-amx", std=0.1, config=GPT2Config(
        vocab_size=50257, n_positions=128, n_embd=64, n_layer=1, n_head=2))
    GPT2Tokenizer.from_pretrained("gpt2", local_files_only=True).save_pretrained(folder)
    text = "To be, or not to be, that is the question. " * 8
    values = {}
    try:
        for precision in ("highest", "medium"):
            code, out, _ = run_cli(capsys, "score", "--text", text, "--model", folder, "--matmul-precision", precision)
            assert code == 0
            values[precision] = float(re.search(r"perplexity: ([\d.]+)", out).group(1))
            assert engine.get_float32_matmul_precision() == precision
    finally:
        engine.set_float32_matmul_precision("highest")
    if amx.available():
        assert values["medium"] != values["highest"]
        np.testing.assert_allclose(values["medium"], values["highest"], rtol=1e-2)
    else:
        assert values["medium"] == values["highest"]
    with pytest.raises(SystemExit):
        run_cli(capsys, "score", "--text", text, "--model", folder, "--matmul-precision", "low")


def test_generate_beams_and_ngram_flags_print_what_the_library_generates(capsys, model_folder, loaded):
    model, tok = loaded
    ids = tok.encode(PROMPT)
    settings = dict(num_beams=3, no_repeat_ngram_size=2, length_penalty=0.7, num_return_sequences=2)
    expected = generate(model, [ids], max_new_tokens=8, eos_token_id=tok.eos_token_id, **settings)
    code, out, _ = run_cli(capsys, "generate", PROMPT, "--model", model_folder, "--greedy", "--max-new-tokens", 8,
                           "--num-beams", 3, "--no-repeat-ngram-size", 2, "--length-penalty", 0.7,
                           "--num-return-sequences", 2)
    assert code == 0
    texts = [PROMPT + tok.decode([t for t in row[len(ids):] if t != tok.eos_token_id]) for row in expected]
    assert out == "".join(text + "\n" for text in texts)
    code, out, err = run_cli(capsys, "generate", PROMPT, "--model", model_folder, "--num-beams", 0)
    assert code != 0 and "num_beams must be an integer >= 1" in err


def test_generate_with_int8_activations_prints_what_the_library_generates(capsys, tmp_path):
    from minigpt2 import engine
    model_folder = str(write_random_model(tmp_path, seed=5, n_embd=64))   # a multiple of 32: integer dot products
    tok = GPT2Tokenizer.from_pretrained(model_folder)
    ids = tok.encode(PROMPT)
    model = GPT2LMHeadModel.from_pretrained(model_folder, dtype="int8")
    engine.set_int8_compute("int8")
    try:
        expected = generate(model, [ids], max_new_tokens=12, eos_token_id=None)[0, len(ids):]
        engine.set_int8_compute("float32")
        code, out, _ = run_cli(capsys, "generate", PROMPT, "--model", model_folder, "--greedy", "--max-new-tokens", 12,
                               "--dtype", "int8", "--int8-compute", "int8")
        assert code == 0 and engine.get_int8_compute() == "int8"
        assert out == PROMPT + tok.decode(expected) + "\n"
    finally:
        engine.set_int8_compute("float32")
