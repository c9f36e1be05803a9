"""Padded batches: every row's logits equal the same row run alone; masked rows never give NaN."""

import numpy as np
import pytest

from minigpt2 import ops
from minigpt2.model import GPT2LMHeadModel, backend_module

from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

ROWS = [[5, 9, 100, 7, 300, 2, 11], [42, 17, 3], [250, 8, 8, 1, 64]]   # different lengths


@pytest.fixture(scope="module", params=["numpy", "numba"])
def model(request):
    return GPT2LMHeadModel.from_pretrained(FIXTURES_DIR / "models" / "odd", backend=request.param)


def pad(rows, side, pad_id=0):
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for r, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[r, cols], mask[r, cols] = row, 1
    return ids, mask


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_rows_equal_rows_alone(model, side):
    ids, mask = pad(ROWS, side)
    batched = model(ids, attention_mask=mask).logits
    assert np.isfinite(batched).all()
    for r, row in enumerate(ROWS):
        alone = model([row]).logits[0]
        assert rel(batched[r][mask[r].astype(bool)], alone) <= 1e-5


def test_left_padded_decode_with_cache_equals_rows_alone(model):
    ids, mask = pad(ROWS, "left")
    out = model(ids, attention_mask=mask, use_cache=True)
    cache = out.past_key_values
    new = np.array([[7], [13], [21]])
    mask = np.concatenate([mask, np.ones((3, 1), np.int64)], axis=1)
    step = model(new, attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
    for r, row in enumerate(ROWS):
        alone = model([row + [int(new[r, 0])]]).logits[0, -1]
        assert rel(step[r], alone) <= 1e-5


def test_fully_masked_row_gives_no_nan(model):
    ids, mask = pad(ROWS, "right")
    mask[1] = 0                                           # a row that is all padding
    out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert np.isfinite(out.logits).all()
    assert all(np.isfinite(h).all() for h in out.hidden_states)
    for probs in out.attentions:
        assert (probs[1] == 0).all()                       # no visible key -> zero probabilities
    alone = model([ROWS[0]]).logits[0]
    assert rel(out.logits[0], alone) <= 1e-5               # other rows unaffected


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_attention_row_without_visible_key_is_zero(backend):
    K = backend_module(backend)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(3))
    mask = np.array([[[True, False, False], [False, False, False], [True, True, False]]])
    out, probs = K.attention(q, k, v, mask, 0.5, None, True)
    assert np.isfinite(out).all() and np.isfinite(probs).all()
    assert (probs[0, :, 1] == 0).all() and (out[0, :, 1] == 0).all()
    np.testing.assert_allclose(probs[0, :, 0, 0], 1.0)
    # row 2 by hand: softmax over the two visible scores
    scores = np.einsum("hd,hsd->hs", q[0, :, 2], k[0, :, :2]) * 0.5
    expected = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[0, :, 2, :2], expected, rtol=1e-5)
    assert (probs[0, :, 2, 2] == 0).all()


def test_positions_come_from_the_mask():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    causal = ops.causal_mask(5, 0, mask)
    assert causal.shape == (2, 5, 5) and not causal[0, :, :2].any() and not causal[1, :, 3:].any()
