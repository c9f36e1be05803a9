"""ops.py, the NumPy reference: each op against hand computation or the torch/transformers formula."""

import math

import numpy as np
import pytest

from minigpt2 import ops

X = np.linspace(-12, 12, 241, dtype=np.float32)


def test_gelu_new_by_hand():
    # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) at x = 1 and x = -2
    for x in (1.0, -2.0):
        expected = 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        assert ops.gelu_new(np.float32(x)) == pytest.approx(expected, rel=1e-6)
    # the exact (erf) GELU differs from it: x Phi(x) at x = 1 is 0.841344746...
    assert ops.gelu(np.array([1.0], np.float32))[0] == pytest.approx(0.8413447460685429, rel=1e-7)


@pytest.mark.parametrize("name", sorted(ops.ACTIVATIONS))
def test_activations_match_transformers(name):
    torch = pytest.importorskip("torch")
    activations = pytest.importorskip("transformers.activations")
    theirs = activations.ACT2FN[name](torch.from_numpy(X)).numpy()
    ours = ops.ACTIVATIONS[name](X)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=2e-6)


def test_layer_norm_by_hand_and_vs_torch():
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    # mean 2, biased variance 2/3: (x - 2) / sqrt(2/3 + eps)
    expected = (x - 2) / np.sqrt(2 / 3 + 1e-5) * 2 + 0.5
    np.testing.assert_allclose(ops.layer_norm(x, np.float32(2), np.float32(0.5)), expected, rtol=1e-6)
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5, 48)) * 4 + 1).astype(np.float32)
    w, b = rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    theirs = torch.nn.functional.layer_norm(torch.from_numpy(x), (48,), torch.from_numpy(w),
                                            torch.from_numpy(b), 1e-5).numpy()
    np.testing.assert_allclose(ops.layer_norm(x, w, b), theirs, rtol=1e-5, atol=1e-5)


def test_linear_conv1d_layout():
    x = np.array([[[1.0, 2.0]]], np.float32)                 # [1, 1, 2]
    w = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]], np.float32)   # [n_in 2, n_out 3]
    np.testing.assert_array_equal(ops.linear(x, w, np.array([0.5, 0, 0], np.float32)), [[[1.5, 2.0, 8.0]]])
    np.testing.assert_array_equal(ops.linear(x, w, None), [[[1.0, 2.0, 8.0]]])


def test_split_and_merge_heads():
    x = np.arange(2 * 3 * 12, dtype=np.float32).reshape(2, 3, 12)
    heads = ops.split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(heads[1, 2, 0], x[1, 0, 6:9])   # head 2 = channels 6..8
    np.testing.assert_array_equal(ops.merge_heads(heads), x)


def test_causal_mask_with_past():
    mask = ops.causal_mask(2, n_past=3)
    np.testing.assert_array_equal(mask[0], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_softmax_is_stable():
    p = ops.softmax(np.array([1000.0, 1000.0, -1000.0], np.float32))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0])


def test_cross_entropy_vs_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((7, 11)).astype(np.float32) * 3
    labels = rng.integers(0, 11, 7)
    labels[2] = -100
    theirs = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels),
                                               ignore_index=-100).item()
    assert ops.cross_entropy(logits, labels) == pytest.approx(theirs, rel=1e-6)
