"""The sampling warpers of issue 19 against transformers' classes on random scores (their tokens
cannot be compared: our draws are not torch's), and the numerics traps of sampling (issue 20,
item 9): a tiny temperature, NaN logits."""

import numpy as np
import pytest

from minigpt2 import generate as gen
from minigpt2.ops import softmax


@pytest.fixture(scope="module")
def lp():
    pytest.importorskip("transformers")
    from transformers.generation import logits_process
    return logits_process


def random_scores(seed, rows=5, vocab=300):
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(rows, vocab)) * rng.uniform(0.3, 4, size=(rows, 1))).astype(np.float32)
    scores[0, 7:] = -np.inf                                 # a row already filtered (as after top-k)
    scores[1, :20] = scores[1, 0]                           # ties
    return scores


def same_kept_and_values(ours, theirs):
    theirs = theirs.numpy()
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
    np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], rtol=1e-6)


@pytest.mark.parametrize("keep", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warpers_equal_transformers(lp, seed, keep):
    import torch
    from minigpt2 import processors as p
    scores = random_scores(seed)
    t = lambda: torch.from_numpy(scores.copy())
    for min_p in (0.01, 0.2, 0.9):
        same_kept_and_values(p.apply_min_p(scores, min_p, keep), lp.MinPLogitsWarper(min_p, min_tokens_to_keep=keep)(None, t()))
    for mass in (0.2, 0.9, 0.99):
        same_kept_and_values(p.apply_typical_p(scores, mass, keep), lp.TypicalLogitsWarper(mass, min_tokens_to_keep=keep)(None, t()))
    for eps in (1e-4, 3e-3, 0.05):
        same_kept_and_values(p.apply_epsilon_cutoff(scores, eps, keep), lp.EpsilonLogitsWarper(eps, min_tokens_to_keep=keep)(None, t()))
        same_kept_and_values(p.apply_eta_cutoff(scores, eps, keep), lp.EtaLogitsWarper(eps, min_tokens_to_keep=keep)(None, t()))
    same_kept_and_values(p.apply_top_k(scores, 5, keep), lp.TopKLogitsWarper(5, min_tokens_to_keep=keep)(None, t()))


def test_no_repeat_ngram_by_hand():
    from minigpt2.processors import apply_no_repeat_ngram
    scores = np.zeros((1, 10), np.float32)
    ids = [[1, 2, 3, 1, 2]]                  # ends with (1, 2); (1, 2) was followed by 3 -> 3 banned
    assert np.isneginf(apply_no_repeat_ngram(scores, ids, 3)[0]).tolist() == [i == 3 for i in range(10)]
    # padding does not count: the same row behind two pads bans the same
    out = apply_no_repeat_ngram(scores, [[0, 0, 1, 2, 3, 1, 2]], 3, attention_mask=[[0, 0, 1, 1, 1, 1, 1]])
    assert np.isneginf(out[0]).tolist() == [i == 3 for i in range(10)]
    # size 1 bans every token seen
    assert np.isneginf(apply_no_repeat_ngram(scores, ids, 1)[0]).tolist() == [i in (1, 2, 3) for i in range(10)]


class FixedLogits:
    """A stand-in model that always returns the same logits row (no cache)."""

    def __init__(self, row):
        self.row = np.asarray(row, np.float32)
        self.config = type("Config", (), {"vocab_size": self.row.size, "n_positions": 64, "eos_token_id": None})()

    def __call__(self, input_ids=None, **kwargs):
        logits = np.broadcast_to(self.row, (input_ids.shape[0], 1, self.row.size)).copy()
        return type("Out", (), {"logits": logits, "past_key_values": None})()


def test_a_tiny_temperature_picks_the_most_likely_token():
    """1 / 1e-38 overflows float32: every score became +inf and sampling picked a random one (or
    raised 'every token was filtered out'). The limit t -> 0 is the argmax."""
    row = np.linspace(-30, 25, 300)                        # logits of a real model's size
    row[[10, 292]] = 30.0, 29.99                           # the argmax is 10, a close second 292
    model = FixedLogits(row)
    for temperature in (1e-38, 1e-30, 1e-8):
        for seed in range(5):
            out = gen.generate(model, [[1, 2]], do_sample=True, temperature=temperature, top_k=None,
                               max_new_tokens=3, seed=seed, eos_token_id=None)
            assert out[0, 2:].tolist() == [10, 10, 10]
            out = gen.generate(model, [[1, 2]], do_sample=True, temperature=temperature, top_p=0.9,
                               max_new_tokens=2, seed=seed, eos_token_id=None)
            assert out[0, 2:].tolist() == [10, 10]


def test_nan_logits_are_a_clear_error():
    row = np.zeros(50)
    row[7] = np.nan
    for kwargs in (dict(do_sample=True, seed=0), dict(do_sample=False), dict(num_beams=2)):
        with pytest.raises(ValueError, match="the model produced NaN logits"):
            gen.generate(FixedLogits(row), [[1, 2]], max_new_tokens=2, **kwargs)


def test_sampling_probabilities_unchanged_by_the_overflow_guard():
    """The guard only acts where float32 overflows: ordinary temperatures give transformers' values."""
    from minigpt2.processors import apply_temperature
    scores = random_scores(4)
    np.testing.assert_array_equal(apply_temperature(scores, 0.5), scores / np.float32(0.5))
    tiny = apply_temperature(scores[2:3], 1e-38)
    assert np.isfinite(tiny).sum() >= 1 and softmax(tiny.astype(np.float64))[0].argmax() == scores[2].argmax()


def test_beam_sampling_draws_follow_the_softmax_without_replacement():
    """The first draw of each row follows softmax(scores); later draws never repeat a candidate.
    20000 rows over 6 candidates: the TV bound 0.02 is several standard deviations out."""
    from minigpt2.beam_search import sample_without_replacement
    from minigpt2.processors import make_rng
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    scores = np.repeat(np.log(p)[None, :], 20000, axis=0).astype(np.float32)
    drawn = sample_without_replacement(scores, 4, make_rng(0))      # [rows, 4]
    assert all(len(set(row)) == 4 for row in drawn[:500])
    first = np.bincount(drawn[:, 0], minlength=6) / len(drawn)
    assert 0.5 * np.abs(first - p).sum() < 0.02
    # second draw given the first was 0: p renormalised without candidate 0
    second = drawn[drawn[:, 0] == 0, 1]
    expected = p[1:] / p[1:].sum()
    assert 0.5 * np.abs(np.bincount(second, minlength=6)[1:] / len(second) - expected).sum() < 0.03
