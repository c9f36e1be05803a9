"""Generation: each logits processor against transformers and hand-computed cases, the sampling
rule (statistically), the streaming decoder (UTF-8, stop strings), and the decode loop against
transformers' generate on random-initialised models."""

import json

import numpy as np
import pytest

from minigpt2 import generate as gen
from minigpt2.generate import StreamDecoder
from minigpt2.generation_config import GenerationConfig
from minigpt2.ops import softmax
from minigpt2.processors import (
    apply_min_new_tokens,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    make_rng,
    process_logits,
    sample_tokens,
)

from conftest import GPT2_VOCAB_DIR
from generation_helpers import TorchForward, noisy_hf_model as _noisy_hf_model

NEG_INF = -np.inf


# ---------------------------------------------------------------- processors, by hand


def test_top_k_keeps_ties_with_the_kth():
    scores = np.array([[1.0, 3.0, 2.0, 3.0, 2.0, 0.5]], dtype=np.float32)
    # k = 3: the 3rd highest is 2.0, and both 2.0s are kept (4 tokens survive)
    kept = apply_top_k(scores, 3)
    np.testing.assert_array_equal(kept, [[NEG_INF, 3.0, 2.0, 3.0, 2.0, NEG_INF]])
    np.testing.assert_array_equal(apply_top_k(scores, 1), [[NEG_INF, 3.0, NEG_INF, 3.0, NEG_INF, NEG_INF]])
    np.testing.assert_array_equal(apply_top_k(scores, 0), scores)      # 0 = off
    np.testing.assert_array_equal(apply_top_k(scores, 100), scores)    # k > vocab keeps all


def test_top_p_keeps_the_token_that_crosses_p():
    # probabilities 0.5, 0.3, 0.15, 0.05 (log of them as scores)
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    scores = np.log(probs)[None, :].astype(np.float32)
    # ascending cumulative: 0.05, 0.20, 0.50, 1.0; p = 0.7 removes cum <= 0.3 -> 0.05 and 0.15
    out = apply_top_p(scores, 0.7)
    assert np.isneginf(out[0, [0, 2]]).all() and np.isfinite(out[0, [1, 3]]).all()
    # p = 0.45: the top token alone (0.5) reaches it, so only it stays (cum <= 0.55 removed)
    out = apply_top_p(scores, 0.45)
    assert np.isfinite(out[0]).tolist() == [False, True, False, False]
    # p = 0: every cum <= 1 is removed, except min_tokens_to_keep = 1 token
    assert np.isfinite(apply_top_p(scores, 0.0)[0]).tolist() == [False, True, False, False]
    np.testing.assert_array_equal(apply_top_p(scores, 1.0), scores)


def test_repetition_penalty_by_hand():
    scores = np.array([[2.0, -2.0, 1.0, -1.0]], dtype=np.float32)
    ids = np.array([[0, 1, 1, 0]])                      # ids 0 and 1 seen (twice each: once penalised)
    out = apply_repetition_penalty(scores, ids, 2.0)
    np.testing.assert_array_equal(out, [[1.0, -4.0, 1.0, -1.0]])
    # masked (padding) positions do not count
    mask = np.array([[0, 0, 1, 1]])                     # only ids 1 and 0 at positions 2,3 ... both
    ids = np.array([[2, 3, 1, 0]])
    out = apply_repetition_penalty(scores, ids, 2.0, attention_mask=mask)
    np.testing.assert_array_equal(out, [[1.0, -4.0, 1.0, -1.0]])


def test_min_new_tokens_and_temperature_by_hand():
    scores = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(apply_min_new_tokens(scores, 0, 2, [2]), [[1.0, 2.0, NEG_INF]])
    np.testing.assert_array_equal(apply_min_new_tokens(scores, 2, 2, [2]), scores)
    np.testing.assert_array_equal(apply_temperature(scores, 0.5), [[2.0, 4.0, 6.0]])
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(scores, 0.0)


# ---------------------------------------------------------------- processors vs transformers


@pytest.fixture(scope="module")
def hf_processors():
    pytest.importorskip("transformers")
    import torch
    from transformers.generation import logits_process as lp
    return torch, lp


def _assert_same_processed(ours, theirs):
    """Same kept set (finite entries) and the same probabilities."""
    theirs = theirs.numpy()
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
    np.testing.assert_allclose(softmax(ours.astype(np.float64)), softmax(theirs.astype(np.float64)),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("top_k", [1, 2, 7, 50, 500])
def test_top_k_matches_transformers(hf_processors, top_k):
    torch, lp = hf_processors
    rng = np.random.default_rng(top_k)
    scores = rng.normal(size=(4, 300)).astype(np.float32) * 3
    scores[0, :10] = scores[0, 0]                        # a block of ties
    scores[1, ::7] = np.round(scores[1, ::7])            # more ties
    theirs = lp.TopKLogitsWarper(top_k)(None, torch.from_numpy(scores.copy()))
    _assert_same_processed(apply_top_k(scores, top_k), theirs)


@pytest.mark.parametrize("top_p", [0.0, 0.1, 0.5, 0.9, 0.95, 0.999])
def test_top_p_matches_transformers(hf_processors, top_p):
    torch, lp = hf_processors
    rng = np.random.default_rng(int(top_p * 1000))
    scores = (rng.normal(size=(6, 300)) * rng.uniform(0.5, 5, size=(6, 1))).astype(np.float32)
    scores[0, 5:] = -np.inf                              # already-filtered tokens (as after top-k)
    theirs = lp.TopPLogitsWarper(top_p)(None, torch.from_numpy(scores.copy()))
    _assert_same_processed(apply_top_p(scores, top_p), theirs)


@pytest.mark.parametrize("scale", [0.05, 0.5, 2.0])
def test_top_p_matches_transformers_on_a_large_vocab(hf_processors, scale):
    """Flat and peaked rows over 20000 tokens: exercises the growing candidate set. transformers
    sums 20000 float32 probabilities; a token whose exact cumulative probability lies within 1e-5
    of 1 - top_p may fall either way there, so such boundary tokens (if any) are not compared."""
    torch, lp = hf_processors
    scores = (np.random.default_rng(7).normal(size=(2, 20000)) * scale).astype(np.float32)
    for top_p in (0.3, 0.9):
        theirs = np.isfinite(lp.TopPLogitsWarper(top_p)(None, torch.from_numpy(scores.copy())).numpy())
        ours = np.isfinite(apply_top_p(scores, top_p))
        order = np.argsort(scores, axis=-1, kind="stable")
        exact = np.cumsum(softmax(np.take_along_axis(scores, order, -1).astype(np.float64)), axis=-1)
        boundary = np.zeros_like(ours)
        np.put_along_axis(boundary, order, np.abs(exact - (1 - top_p)) < 1e-5, axis=-1)
        assert boundary.sum() <= 2
        np.testing.assert_array_equal(ours[~boundary], theirs[~boundary])


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(hf_processors, penalty):
    torch, lp = hf_processors
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 50)).astype(np.float32)
    ids = rng.integers(0, 50, size=(3, 20))
    theirs = lp.RepetitionPenaltyLogitsProcessor(penalty)(torch.from_numpy(ids), torch.from_numpy(scores.copy()))
    np.testing.assert_array_equal(apply_repetition_penalty(scores, ids, penalty), theirs.numpy())


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.5])
def test_temperature_matches_transformers(hf_processors, temperature):
    torch, lp = hf_processors
    scores = np.random.default_rng(2).normal(size=(2, 40)).astype(np.float32)
    theirs = lp.TemperatureLogitsWarper(temperature)(None, torch.from_numpy(scores.copy()))
    np.testing.assert_allclose(apply_temperature(scores, temperature), theirs.numpy(), rtol=1e-6)


def test_min_new_tokens_matches_transformers(hf_processors):
    torch, lp = hf_processors
    scores = np.random.default_rng(3).normal(size=(2, 40)).astype(np.float32)
    ids = np.zeros((2, 7), dtype=np.int64)               # prompt 5 + 2 new tokens
    for min_new in (1, 2, 3, 5):
        theirs = lp.MinNewTokensLengthLogitsProcessor(5, min_new, [3, 39])(torch.from_numpy(ids), torch.from_numpy(scores.copy()))
        np.testing.assert_array_equal(apply_min_new_tokens(scores, 2, min_new, [3, 39]), theirs.numpy())


def test_processor_chain_matches_transformers(hf_processors):
    torch, lp = hf_processors
    rng = np.random.default_rng(4)
    scores = (rng.normal(size=(3, 200)) * 2).astype(np.float32)
    ids = rng.integers(0, 200, size=(3, 30))
    chain = lp.LogitsProcessorList([
        lp.RepetitionPenaltyLogitsProcessor(1.3),
        lp.MinNewTokensLengthLogitsProcessor(25, 10, [7]),
        lp.TemperatureLogitsWarper(0.8),
        lp.TopKLogitsWarper(40),
        lp.TopPLogitsWarper(0.9),
    ])
    theirs = chain(torch.from_numpy(ids), torch.from_numpy(scores.copy()))
    config = GenerationConfig(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.3,
                              min_new_tokens=10, eos_token_id=[7], max_new_tokens=20)
    ours = process_logits(scores, ids, config, n_new_tokens=5)
    _assert_same_processed(ours, theirs)


# ---------------------------------------------------------------- sampling


def test_sampling_matches_the_processed_distribution():
    """Many seeded draws: the empirical distribution is within a total-variation bound of
    softmax(scores). With n = 40000 draws over 9 possible tokens, the expected TV is about
    0.5 * sum(sqrt(p(1-p)/n)) < 0.01; the bound 0.03 is several standard deviations away,
    and the seed is fixed, so the test is deterministic and not flaky."""
    scores = np.log(np.array([[0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.03, 0.02, 1e-30]]))
    scores = process_logits(scores.astype(np.float32), np.zeros((1, 1), int),
                            GenerationConfig(do_sample=True, top_p=0.99))
    probs = softmax(scores.astype(np.float64))[0]
    assert probs[-1] == 0                                # top-p removed the last token
    rng = make_rng(1234)
    n = 40000
    draws = np.concatenate([sample_tokens(np.repeat(scores, 100, axis=0), rng) for _ in range(n // 100)])
    empirical = np.bincount(draws, minlength=probs.size) / n
    assert empirical[probs == 0].sum() == 0              # never a removed token
    assert 0.5 * np.abs(empirical - probs).sum() < 0.03
    # a chi-square check on the kept tokens too: 8 degrees of freedom, 99.99% quantile ~ 33.4
    kept = probs > 0
    chi2 = np.sum((empirical[kept] * n - probs[kept] * n) ** 2 / (probs[kept] * n))
    assert chi2 < 33.4


def test_sampling_is_reproducible_and_procedure_is_as_documented():
    scores = np.random.default_rng(0).normal(size=(5, 30)).astype(np.float32)
    a = sample_tokens(scores, make_rng(7))
    b = sample_tokens(scores, make_rng(7))
    np.testing.assert_array_equal(a, b)
    # the documented rule: first index whose cumulative probability exceeds u * total
    u = np.random.Generator(np.random.PCG64(7)).random(5)
    cumulative = np.cumsum(softmax(scores.astype(np.float64)), axis=-1)
    expected = [int(np.searchsorted(c, ui * c[-1], side="right")) for c, ui in zip(cumulative, u)]
    assert a.tolist() == expected


def test_sampling_never_picks_a_removed_token_at_the_edge():
    class EdgeRng:                                         # u as close to 1 as a float64 gets
        def random(self, n):
            return np.full(n, np.nextafter(1.0, 0.0))
    scores = np.array([[0.0, 1.0, -np.inf, -np.inf]], dtype=np.float32)
    assert sample_tokens(scores, EdgeRng()).tolist() == [1]


# ---------------------------------------------------------------- streaming decoder


@pytest.fixture(scope="module")
def gpt2_token_bytes():
    """id -> bytes straight from the real vocab file and the GPT-2 byte table (no tokenizer)."""
    encoder = json.loads((GPT2_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    byte_of_char, shift = {}, 0
    for b in range(256):
        if b in printable:
            byte_of_char[chr(b)] = b
        else:
            byte_of_char[chr(256 + shift)] = b
            shift += 1
    decoder = {i: bytes(byte_of_char[c] for c in s) for s, i in encoder.items()}
    return decoder.__getitem__


def test_stream_never_splits_a_utf8_character(gpt2_token_bytes):
    # " 🤗" is three GPT-2 tokens (minGPT's worked example): 12520, 97, 245 (4 UTF-8 bytes + space)
    ids = [1058, 35, 12520, 97, 245, 0]                  # " :D 🤗!" roughly: ':' 'D' ' 🤗' '!'
    decoder = StreamDecoder(gpt2_token_bytes)
    pieces = [decoder.push(i) for i in ids] + [decoder.finish()]
    assert "\ufffd" not in "".join(pieces)
    assert pieces[2:5] == [" ", "", "🤗"]                # the emoji appears whole, at its last token
    assert "".join(pieces) == b"".join(gpt2_token_bytes(i) for i in ids).decode("utf-8")


def test_stream_replaces_bytes_that_never_complete(gpt2_token_bytes):
    decoder = StreamDecoder(gpt2_token_bytes)
    pieces = [decoder.push(12520), decoder.finish()]     # ' \xf0\x9f' and then the end
    assert "".join(pieces) == b" \xf0\x9f".decode("utf-8", errors="replace")


def test_stop_string_straddling_tokens():
    vocab = {0: b"Hello", 1: b" wor", 2: b"ld", 3: b"!", 4: b"\n", 5: b"\nThe", 6: b" end"}
    decoder = StreamDecoder(vocab.__getitem__, stop=["world", "\n\n"])
    assert decoder.push(0) == "Hello"
    assert decoder.push(1) == " "                        # "wor" might begin "world": held back
    assert decoder.push(2) == ""                         # "world" completed: stop, nothing past it
    assert decoder.stopped and decoder.text == "Hello "
    assert decoder.push(3) == "" and decoder.finish() == ""

    decoder = StreamDecoder(vocab.__getitem__, stop=["\n\n"])
    assert decoder.push(0) + decoder.push(4) == "Hello"  # the "\n" waits
    assert decoder.push(5) == ""                         # "\n" + "\nThe": stop
    assert decoder.text == "Hello"

    decoder = StreamDecoder(vocab.__getitem__, stop=["\n\n"])
    pieces = [decoder.push(i) for i in (0, 4, 6)] + [decoder.finish()]
    assert pieces == ["Hello", "", "\n end", ""]         # a lone "\n" is released when it is not a stop
    assert not decoder.stopped

    decoder = StreamDecoder(vocab.__getitem__, stop=["d!", "ld"])
    text = "".join(decoder.push(i) for i in (0, 1, 2, 3))
    assert text == "Hello wor" and decoder.stopped       # the earliest stop wins

    with pytest.raises(ValueError, match="non-empty"):
        StreamDecoder(vocab.__getitem__, stop=[""])


def test_stream_emits_everything_at_the_end_when_a_stop_prefix_is_left():
    vocab = {0: b"abc", 1: b" en"}
    decoder = StreamDecoder(vocab.__getitem__, stop=["end"])
    assert decoder.push(0) + decoder.push(1) == "abc "
    assert decoder.finish() == "en"


# ---------------------------------------------------------------- the decode loop vs transformers
#
# The loop is first tested over transformers' own forward pass (a thin adapter with our calling
# convention), so these tests check generate.py alone; tests over minigpt2's model come below.


def _hf_greedy(hf_model, ids, mask=None, **kwargs):
    import torch
    out = hf_model.generate(torch.from_numpy(ids), attention_mask=None if mask is None else torch.from_numpy(mask),
                            do_sample=False, output_scores=True, return_dict_in_generate=True, **kwargs)
    # margin between the best and second-best processed score at every step and row
    scores = torch.stack(out.scores, dim=1)                       # [rows, steps, vocab]
    top2 = torch.topk(scores, 2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1])[torch.isfinite(top2[..., 1])]
    return out.sequences.numpy(), float(margin.min()) if margin.numel() else float("inf")


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.5])
def test_greedy_loop_equals_transformers(repetition_penalty):
    hf_model = _noisy_hf_model(0)
    ids = np.array([[5, 17, 42, 8, 8, 3]])
    expected, margin = _hf_greedy(hf_model, ids, max_new_tokens=48, min_new_tokens=48,
                                  repetition_penalty=repetition_penalty, eos_token_id=95, pad_token_id=95)
    assert margin > 1e-3                                  # no near-tie decided the reference
    model = TorchForward(hf_model)
    ours = gen.generate(model, ids, max_new_tokens=48, min_new_tokens=48,
                        repetition_penalty=repetition_penalty, eos_token_id=95)
    np.testing.assert_array_equal(ours, expected)
    # one prefill over the prompt, then one token per step through the cache
    assert model.calls[0] == (1, 6) and all(shape == (1, 1) for shape in model.calls[1:])
    assert len(model.calls) == 48


def test_left_padded_batch_equals_single_rows():
    """The loop alone (transformers' forward underneath): a left-padded batch gives, row by row,
    what each prompt gives alone. (Against transformers' generate: the engine test below.)"""
    model = TorchForward(_noisy_hf_model(1))
    prompts = [[5, 17, 42, 8], [7], [3, 9, 11, 2, 60, 61]]
    width = max(map(len, prompts))
    pad = 0
    ids = np.array([[pad] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(max_new_tokens=24, repetition_penalty=1.3, eos_token_id=95, pad_token_id=pad)
    batch = gen.generate(model, ids, attention_mask=mask, **kwargs)
    for row, prompt in enumerate(prompts):
        alone = gen.generate(model, [prompt], **kwargs)[0]
        got = batch[row, width - len(prompt):]             # drop the row's left padding
        np.testing.assert_array_equal(got[: len(alone)], alone)
        assert np.all(got[len(alone):] == pad)             # a row that finished early is padded


def test_eos_finishes_a_row_and_pads_it():
    hf_model = _noisy_hf_model(2)
    model = TorchForward(hf_model)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    free = gen.generate(model, ids, max_new_tokens=12, eos_token_id=None)
    eos = int(free[0, 3 + 4])                              # make row 0's 5th new token the "EOS"
    out = gen.generate(model, ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=77)
    first_eos = 3 + list(free[0, 3:]).index(eos)
    assert out[0, first_eos] == eos and np.all(out[0, first_eos + 1:] == 77)
    expected, _ = _hf_greedy(hf_model, ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=77)
    np.testing.assert_array_equal(out, expected)
    # min_new_tokens forbids the EOS before it: the row then continues like transformers' does
    out = gen.generate(model, ids, max_new_tokens=12, min_new_tokens=10, eos_token_id=eos, pad_token_id=77)
    expected, _ = _hf_greedy(hf_model, ids, max_new_tokens=12, min_new_tokens=10, eos_token_id=eos, pad_token_id=77)
    np.testing.assert_array_equal(out, expected)


def test_sampling_is_seeded_and_temperature_zero_is_greedy():
    model = TorchForward(_noisy_hf_model(3))
    ids = [[1, 2, 3]]
    kwargs = dict(do_sample=True, max_new_tokens=20, top_k=20, top_p=0.9, temperature=1.2, eos_token_id=None)
    a = gen.generate(model, ids, seed=5, **kwargs)
    b = gen.generate(model, ids, seed=np.random.Generator(np.random.PCG64(5)), **kwargs)
    c = gen.generate(model, ids, seed=6, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    greedy = gen.generate(model, ids, max_new_tokens=20, eos_token_id=None)
    zero = gen.generate(model, ids, do_sample=True, temperature=0.0, max_new_tokens=20, eos_token_id=None, seed=1)
    np.testing.assert_array_equal(zero, greedy)
    many = gen.generate(model, ids, seed=5, num_return_sequences=3, **kwargs)
    # the first step's draws are u[0], u[1], u[2]: row 0's first token is the one generated alone
    assert many.shape == (3, 23) and many[0, 3] == a[0, 3]
    assert len({tuple(row) for row in many}) == 3


class ByteTokenizer:
    """A stand-in tokenizer for a small vocab: id i is the 1- or 2-byte piece below."""

    def decode_bytes(self, ids):
        return b"".join(self.piece(i) for i in ids)

    @staticmethod
    def piece(i):
        return bytes([97 + i % 26]) * (1 + i % 2)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def test_stop_string_across_tokens_in_the_loop():
    model = TorchForward(_noisy_hf_model(4))
    tok = ByteTokenizer()
    ids = [[1, 2, 3]]
    free = gen.generate(model, ids, max_new_tokens=30, eos_token_id=None)[0, 3:]
    text = tok.decode(free)
    # a stop string made of the end of the 10th token's text and the start of the 11th's
    boundary = len(tok.decode(free[:10]))
    stop = text[boundary - 1 : boundary + 1]
    first_hit = text.find(stop)
    pieces = []
    out = gen.generate(model, ids, max_new_tokens=30, eos_token_id=None, stop=[stop], tokenizer=tok,
                       streamer=pieces.append)
    assert "".join(pieces) == text[:first_hit]           # nothing past the stop, stop excluded
    n_kept = next(n for n in range(1, 31) if stop in tok.decode(free[:n]))
    np.testing.assert_array_equal(out[0, 3:], free[:n_kept])   # ends at the token completing the stop
    assert list(gen.stream(model, tok, ids[0], max_new_tokens=30, eos_token_id=None, stop=stop)) == pieces


def test_context_overflow_is_an_error_unless_crop():
    hf_model = _noisy_hf_model(5, n_positions=16)
    model = TorchForward(hf_model)
    ids = [list(range(10))]
    with pytest.raises(ValueError, match="n_positions"):
        gen.generate(model, ids, max_new_tokens=7)
    out = gen.generate(model, ids, max_new_tokens=12, crop=True, eos_token_id=None)
    assert out.shape == (1, 22)
    # crop = each token past the context comes from a full pass over the last 16 tokens
    for t in range(16, 22):
        logits = model(input_ids=out[:, t - 16 : t]).logits
        assert out[0, t] == np.argmax(logits[0, -1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(temperature=-0.5, do_sample=True), "temperature"),
    (dict(top_p=1.5, do_sample=True), "top_p"),
    (dict(top_k=-2, do_sample=True), "top_k"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(num_return_sequences=2), "do_sample"),
    (dict(stop="x"), "tokenizer"),
    (dict(streamer=print), "tokenizer"),
    (dict(attention_mask=[[1, 1, 0]]), "left padding"),
    (dict(attention_mask=[[1, 1]]), "attention_mask"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    model = TorchForward(_noisy_hf_model(6))
    with pytest.raises(ValueError, match=message):
        gen.generate(model, [[1, 2, 3]], **kwargs)
    if "streamer" not in kwargs:                           # iter_generate checks at the call,
        with pytest.raises(ValueError, match=message):     # before any step is asked for
            gen.iter_generate(model, [[1, 2, 3]], **kwargs)
    with pytest.raises(ValueError, match="empty"):
        gen.generate(model, [[]])
    with pytest.raises(ValueError, match="vocab"):
        gen.generate(model, [[1, 500]])
    with pytest.raises(ValueError, match="different lengths"):
        gen.generate(model, [[1, 2], [3]])
    with pytest.raises(ValueError, match="integers"):
        gen.generate(model, [[1.5, 2.0]])


# ---------------------------------------------------------------- minigpt2's model vs transformers


@pytest.fixture(scope="module")
def saved_hf_model(tmp_path_factory):
    hf_model = _noisy_hf_model(0)
    folder = tmp_path_factory.mktemp("hf-random")
    hf_model.save_pretrained(folder)
    return hf_model, folder


@pytest.mark.parametrize("backend, repetition_penalty", [("numpy", 1.0), ("numba", 1.0), ("numba", 1.3)])
def test_model_generate_equals_transformers(saved_hf_model, backend, repetition_penalty):
    from minigpt2 import GPT2LMHeadModel
    hf_model, folder = saved_hf_model
    ids = np.array([[5, 17, 42, 8, 8, 3]])
    kwargs = dict(max_new_tokens=48, min_new_tokens=48, repetition_penalty=repetition_penalty, eos_token_id=95)
    expected, margin = _hf_greedy(hf_model, ids, pad_token_id=95, **kwargs)
    assert margin > 1e-3                                  # far above float32 differences between engines
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    np.testing.assert_array_equal(model.generate(ids, **kwargs), expected)


def test_model_left_padded_batch_equals_single_rows(saved_hf_model):
    from minigpt2 import GPT2LMHeadModel
    hf_model, folder = saved_hf_model
    model = GPT2LMHeadModel.from_pretrained(folder)       # the default (numba) engine
    prompts = [[5, 17, 42, 8], [7], [3, 9, 11, 2, 60, 61]]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(max_new_tokens=40, repetition_penalty=1.2, eos_token_id=95, pad_token_id=0)
    batch = model.generate(ids, attention_mask=mask, **kwargs)
    for row, prompt in enumerate(prompts):
        expected, margin = _hf_greedy(hf_model, np.array([prompt]), **kwargs)
        assert margin > 1e-3
        got = batch[row, width - len(prompt):]
        np.testing.assert_array_equal(got[: expected.shape[1]], expected[0])
        assert np.all(got[expected.shape[1]:] == 0)


# ---------------------------------------------------------------- the committed fixture (no torch needed)
# tests/fixtures/make_generation_fixtures.py wrote a small random model and transformers' outputs.


@pytest.fixture(scope="module")
def generation_fixture():
    from conftest import FIXTURES_DIR
    folder = FIXTURES_DIR / "generation"
    return folder, dict(np.load(folder / "reference.npz"))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fixture_greedy_equals_transformers(generation_fixture, backend):
    from minigpt2 import GPT2LMHeadModel
    folder, ref = generation_fixture
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    for name, penalty in (("greedy", 1.0), ("greedy_penalty", 1.3)):
        assert ref[name + "_margin"] > 1e-3                 # the reference was not decided by a near-tie
        ours = model.generate([ref["prompt"]], max_new_tokens=48, min_new_tokens=48,
                              repetition_penalty=penalty, eos_token_id=95)
        np.testing.assert_array_equal(ours[0], ref[name])


def test_fixture_left_padded_batch_equals_transformers_rows(generation_fixture):
    from minigpt2 import GPT2LMHeadModel
    folder, ref = generation_fixture
    model = GPT2LMHeadModel.from_pretrained(folder)
    prompts = [ref[f"batch_prompt_{i}"].tolist() for i in range(3)]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = (np.arange(width)[None, :] >= width - np.array([len(p) for p in prompts])[:, None]).astype(int)
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=40, repetition_penalty=1.2,
                           eos_token_id=95, pad_token_id=0)
    for row, prompt in enumerate(prompts):
        expected = ref[f"batch_alone_{row}"]
        assert ref[f"batch_margin_{row}"] > 1e-3
        got = batch[row, width - len(prompt):]
        np.testing.assert_array_equal(got[: expected.size], expected)
        assert np.all(got[expected.size:] == 0)


def test_fixture_processors_equal_transformers(generation_fixture):
    _, ref = generation_fixture
    scores, ids = ref["scores"], ref["score_ids"]
    for ours, theirs in ((apply_top_k(scores, 7), ref["top_k_7"]), (apply_top_p(scores, 0.9), ref["top_p_0.9"])):
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
        np.testing.assert_array_equal(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)])
    np.testing.assert_allclose(apply_temperature(scores, 0.7), ref["temperature_0.7"], rtol=1e-6)
    np.testing.assert_array_equal(apply_repetition_penalty(scores, ids, 1.3), ref["penalty_1.3"])


# ---------------------------------------------------------------- the loop with the real tokenizer


class ScriptedModel:
    """A stand-in model whose greedy choice follows a script of token ids (no cache)."""

    def __init__(self, script, vocab_size=50257, n_positions=1024):
        self.script = list(script)
        self.config = type("Config", (), {"vocab_size": vocab_size, "n_positions": n_positions,
                                          "eos_token_id": 50256})()
        self.prompt_length = None

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                 use_cache=False, logits_to_keep=0):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        step = attention_mask.shape[1] - self.prompt_length           # tokens generated so far
        logits = np.zeros((input_ids.shape[0], 1, self.config.vocab_size), dtype=np.float32)
        logits[:, 0, self.script[min(step, len(self.script) - 1)]] = 10.0
        return type("Out", (), {"logits": logits, "past_key_values": None})()


@pytest.fixture(scope="module")
def tokenizer():
    from minigpt2.tokenizer import GPT2Tokenizer
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    return tok


def test_stream_with_the_real_tokenizer_keeps_emoji_whole(tokenizer):
    text = "Hi :D 🤗🤗 ok"
    script = tokenizer.encode(text)
    assert len(script) > len(text.split())                           # the emoji take several tokens
    pieces = list(gen.stream(ScriptedModel(script + [50256]), tokenizer, "Go", max_new_tokens=50))
    assert "".join(pieces) == text                                    # EOS ends the text, not printed
    assert all("\ufffd" not in piece for piece in pieces)
    assert any("🤗" in piece for piece in pieces)


def test_stop_string_straddling_real_tokens(tokenizer):
    text = "First line.\n\nSecond line."
    script = tokenizer.encode(text)
    pieces = []
    prompt = tokenizer.encode("Go")
    out = gen.generate(ScriptedModel(script), [prompt], max_new_tokens=30,
                       stop=[".\n\nS"], tokenizer=tokenizer, streamer=pieces.append)
    assert "".join(pieces) == "First line"
    # the ids end with the token that completed the stop string, no further
    kept = out[0, len(prompt):].tolist()
    assert ".\n\nS" in tokenizer.decode(kept) and ".\n\nS" not in tokenizer.decode(kept[:-1])


def test_stream_reads_the_prompts_special_tokens_as_asked(tokenizer):
    """issue 20.3: the prompt's "<|endoftext|>" is id 50256 by default, plain text with
    allowed_special=(), and an error with disallowed_special="all" (ids from tiktoken's rules)."""
    class Recording(ScriptedModel):
        def __call__(self, input_ids=None, **kwargs):
            self.prompts = getattr(self, "prompts", []) + [input_ids[0].tolist()]
            return super().__call__(input_ids=input_ids, **kwargs)

    pytest.importorskip("tiktoken")
    from minigpt2.tokenizer.reference import tiktoken_gpt2

    prompt, oracle = "a<|endoftext|>b", tiktoken_gpt2()
    for options, expected in (({}, oracle.encode(prompt, allowed_special="all")),
                              ({"allowed_special": ()}, oracle.encode_ordinary(prompt))):
        model = Recording([995])
        assert list(gen.stream(model, tokenizer, prompt, max_new_tokens=1, **options)) == [" world"]
        assert model.prompts[0] == expected
    with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>'"):
        list(gen.stream(Recording([995]), tokenizer, prompt, max_new_tokens=1, disallowed_special="all"))
