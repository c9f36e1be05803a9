"""Scoring: per-token log-probs and perplexity against transformers' loss, including the
sliding window of transformers' perplexity guide for texts longer than the context."""

import numpy as np
import pytest

from minigpt2.scoring import score, perplexity, target_logprobs

from generation_helpers import TorchForward, noisy_hf_model


def _hf_loss(hf_model, ids, labels):
    import torch
    with torch.no_grad():
        return float(hf_model(input_ids=torch.from_numpy(ids[None]), labels=torch.from_numpy(labels[None])).loss)


def test_target_logprobs_by_hand():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32)) + 3.0
    np.testing.assert_allclose(target_logprobs(logits, np.array([0, 2])), np.log([0.5, 0.7]), rtol=1e-6)
    # chunking does not change anything
    np.testing.assert_allclose(target_logprobs(logits, np.array([1, 1]), chunk=1), np.log([0.25, 0.2]), rtol=1e-6)


def test_perplexity_is_exp_of_transformers_loss():
    hf_model = noisy_hf_model(10)
    ids = np.random.default_rng(0).integers(0, 96, size=50)
    result = score(TorchForward(hf_model), ids)
    loss = _hf_loss(hf_model, ids, ids)
    assert result.n_windows == 1 and result.logprobs.shape == (49,)
    np.testing.assert_array_equal(result.positions, np.arange(1, 50))
    np.testing.assert_allclose(result.mean_nll, loss, rtol=1e-5)
    np.testing.assert_allclose(result.perplexity, np.exp(loss), rtol=1e-5)
    np.testing.assert_allclose(perplexity(TorchForward(hf_model), [ids.tolist()]), np.exp(loss), rtol=1e-5)


@pytest.mark.parametrize("stride", [5, 12, 32])
def test_sliding_window_matches_transformers_window_by_window(stride):
    """The guide's loop: windows of max_length start every stride tokens; each scores the tokens
    past the previous window's end (labels -100 before). Every window's transformers loss times
    its number of scored tokens must equal our sum over the same tokens."""
    hf_model = noisy_hf_model(11, n_positions=32)
    ids = np.random.default_rng(1).integers(0, 96, size=101)
    model = TorchForward(hf_model)
    result = score(model, ids, stride=stride)
    total_nll, total_count = 0.0, 0
    prev_end, n_windows = 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + 32, len(ids))
        trg_len = end - prev_end
        window = ids[begin:end]
        labels = window.copy()
        labels[:-trg_len] = -100
        count = int((labels[1:] != -100).sum())            # the labels left after the shift
        if count:
            loss = _hf_loss(hf_model, window, labels)
            ours = -result.logprobs[(result.positions >= max(prev_end, begin + 1)) & (result.positions < end)]
            assert ours.size == count
            np.testing.assert_allclose(ours.sum(), loss * count, rtol=1e-5)
            total_nll, total_count, n_windows = total_nll + loss * count, total_count + count, n_windows + 1
        prev_end = end
        if end == len(ids):
            break
    assert result.n_windows == n_windows and result.logprobs.size == total_count
    np.testing.assert_allclose(result.perplexity, np.exp(total_nll / total_count), rtol=1e-5)
    if stride < 32:
        assert total_count == len(ids) - 1                  # overlapping windows: every token scored once
    else:
        assert total_count == len(ids) - 1 - (n_windows - 1)  # each later window's first token has no context


def test_scoring_errors():
    model = TorchForward(noisy_hf_model(10))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        score(model, [5])
    with pytest.raises(ValueError, match="vocab"):
        score(model, [5, 96])
    with pytest.raises(ValueError, match="stride"):
        score(model, [1, 2, 3], stride=0)
    with pytest.raises(ValueError, match="one text"):
        score(model, [[1, 2], [3, 4]])


# ---------------------------------------------------------------- the committed fixture (no torch needed)


@pytest.fixture(scope="module")
def fixture_model_and_reference():
    from conftest import FIXTURES_DIR
    from minigpt2 import GPT2LMHeadModel
    folder = FIXTURES_DIR / "generation"
    return GPT2LMHeadModel.from_pretrained(folder), dict(np.load(folder / "reference.npz"))


def test_fixture_perplexity_is_exp_of_transformers_loss(fixture_model_and_reference):
    model, ref = fixture_model_and_reference
    result = score(model, ref["text"])
    np.testing.assert_allclose(result.mean_nll, ref["text_loss"], rtol=1e-5)
    np.testing.assert_allclose(result.perplexity, np.exp(ref["text_loss"]), rtol=1e-5)


def test_fixture_sliding_window_equals_transformers_windows(fixture_model_and_reference):
    model, ref = fixture_model_and_reference
    result = score(model, ref["text"], max_length=32, stride=12)
    losses, counts = ref["window_losses"], ref["window_counts"]
    assert result.n_windows == len(losses) and result.logprobs.size == counts.sum() == ref["text"].size - 1
    expected_mean = np.sum(losses * counts) / counts.sum()
    np.testing.assert_allclose(result.mean_nll, expected_mean, rtol=1e-5)


def test_progress_bar_does_not_change_the_result(fixture_model_and_reference, capsys):
    model, ref = fixture_model_and_reference
    quiet = score(model, ref["text"], max_length=32, stride=12)
    shown = score(model, ref["text"], max_length=32, stride=12, progress=True)
    np.testing.assert_array_equal(quiet.logprobs, shown.logprobs)
    assert "window" in capsys.readouterr().err
