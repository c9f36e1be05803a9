"""The Numba kernels compute the same functions as the NumPy reference ops.

Each fast kernel in `minigpt2.engine` is compared with its naive twin (plain loops, float64 sums)
and with its `minigpt2.ops` twin, over odd shapes: t = 1 (decode), one and three heads, masks with
fully masked rows, strided views like the KV cache's. Errors are relative: max|diff| / max|ref|.
"""

import math

import numba
import numpy as np
import pytest

import naive_kernels
from minigpt2 import engine, ops
from minigpt2.engine import attention_op, jit, policy

RTOL = 2e-6     # float32 kernels vs float64-accumulating twins, relative to max|ref|


@pytest.fixture(autouse=True, params=["threaded", "serial"])
def build(request, monkeypatch):
    """Run every test on both builds of each kernel (see jit.threaded_and_serial)."""
    monkeypatch.setattr(policy, "SERIAL_MAX_ELEMENTS", 0 if request.param == "threaded" else 1 << 62)
    monkeypatch.setattr(policy, "BESIDE_BLAS_SERIAL", request.param == "serial")
    return request.param


def rel_err(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    return np.abs(actual - expected).max(initial=0.0) / scale


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------- layer norm

@pytest.mark.parametrize("shape", [(1, 1), (1, 768), (3, 5, 33), (2, 1, 7), (4, 17)])
def test_layer_norm_matches_naive_and_ops(shape):
    rng = np.random.default_rng(0)
    x = randn(rng, *shape, scale=3.0) + 2.0          # an offset mean, as real activations have
    weight, bias = randn(rng, shape[-1]), randn(rng, shape[-1])
    fast = engine.layer_norm(x, weight, bias, 1e-5)
    assert fast.dtype == np.float32 and fast.shape == x.shape
    naive = naive_kernels.layer_norm_naive(x.reshape(-1, shape[-1]), weight, bias, 1e-5).reshape(shape)
    assert rel_err(fast, naive) < RTOL
    assert rel_err(fast, ops.layer_norm(x, weight, bias, 1e-5)) < 1e-5


def test_layer_norm_by_hand():
    # x = [1, 2, 3, 4]: mean 2.5, biased variance 1.25 -> (x - 2.5) / sqrt(1.25 + eps)
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    out = engine.layer_norm(x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-5)
    expected = (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / math.sqrt(1.25 + 1e-5)
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)


def test_layer_norm_constant_row_gives_bias():
    # zero variance: (x - mean) = 0 exactly, so the output is the bias (eps keeps it finite)
    x = np.full((2, 9), 7.25, dtype=np.float32)
    bias = np.arange(9, dtype=np.float32)
    out = engine.layer_norm(x, np.ones(9, np.float32), bias, 1e-5)
    np.testing.assert_array_equal(out, np.broadcast_to(bias, (2, 9)))


# ---------------------------------------------------------------------------- GELU

def test_gelu_new_matches_naive_and_ops():
    rng = np.random.default_rng(1)
    x = np.concatenate([randn(rng, 1001, scale=4.0),
                        np.array([0.0, -0.0, 1e-8, -1e-8, 20.0, -20.0, 80.0, -80.0, 1e30, -1e30],
                                 dtype=np.float32)])
    fast = engine.gelu_new(x)
    np.testing.assert_allclose(fast, naive_kernels.gelu_new_naive(x), rtol=1e-6, atol=1e-7)
    # ops evaluates 0.5 * x * (1 + tanh(u)) in float32 (as transformers does), which cancels for
    # x << 0 (1 + tanh(u) ~ 0); the kernel's x * sigmoid(2u) form does not, hence the atol
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(fast, ops.gelu_new(x), rtol=1e-6, atol=1e-6)


def test_gelu_new_by_hand_and_shape():
    # gelu_new(1) = 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.841192 (hand / calculator)
    x = np.array([[1.0, -1.0], [0.0, 3.0]], dtype=np.float32)
    out = engine.gelu_new(x)
    assert out.shape == (2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], 0.8411920, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], 0.8411920 - 1.0, rtol=1e-6)   # gelu(-x) = gelu(x) - x
    assert out[1, 0] == 0.0
    assert np.isnan(engine.gelu_new(np.array([np.nan], np.float32)))[0]


# ---------------------------------------------------------------------------- linear

@pytest.mark.parametrize("matvec", ["blas", "numba"])
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 9, 40])
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (33, 19), (64, 97)])
def test_linear_both_layouts_match_naive_and_ops(rows, n_in, n_out, matvec, monkeypatch):
    monkeypatch.setattr(policy, "FLOAT32_MATVEC", matvec)
    rng = np.random.default_rng(rows * 1000 + n_in)
    x, weight, bias = randn(rng, rows, n_in), randn(rng, n_in, n_out), randn(rng, n_out)
    naive = naive_kernels.linear_naive(x, weight, bias)
    weight_out_in = np.ascontiguousarray(weight.T).T      # same values, [n_out, n_in] in memory
    for w in (weight, weight_out_in):
        fast = engine.linear(x, w, bias)
        assert fast.shape == (rows, n_out) and fast.dtype == np.float32
        assert rel_err(fast, naive) < 1e-5
        assert rel_err(fast, ops.linear(x, weight, bias)) < 1e-5


def test_linear_leading_dims_no_bias_and_one_thread():
    rng = np.random.default_rng(3)
    x, weight = randn(rng, 2, 1, 5, 11), randn(rng, 11, 6)
    expected = x.astype(np.float64) @ weight
    assert rel_err(engine.linear(x, weight, None), expected) < 1e-5
    assert rel_err(engine.linear(x[:, :, :1], weight.T.copy().T, None), expected[:, :, :1]) < 1e-5
    try:
        engine.set_num_threads(1)
        assert rel_err(engine.linear(x[0, 0, :1], weight, None), expected[0, 0, :1]) < 1e-5
    finally:
        engine.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("matvec", ["blas", "numba"])
@pytest.mark.parametrize("rows", [1, 4, 30])
def test_linear_gelu_is_gelu_of_linear(rows, matvec, monkeypatch):
    monkeypatch.setattr(policy, "FLOAT32_MATVEC", matvec)
    rng = np.random.default_rng(rows)
    x, weight, bias = randn(rng, rows, 24), randn(rng, 24, 40), randn(rng, 40)
    expected = ops.gelu_new(naive_kernels.linear_naive(x, weight, bias))
    np.testing.assert_allclose(engine.linear_gelu(x, weight, bias), expected, rtol=1e-5, atol=1e-5)


def test_linear_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="weight"):
        engine.linear(np.zeros((2, 5), np.float32), np.zeros((4, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="bias"):
        engine.linear(np.zeros((2, 4), np.float32), np.zeros((4, 3), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="num_threads"):
        engine.set_num_threads(0)


# ---------------------------------------------------------------------------- attention

def attention_case(rng, b, h, t, s, d, masked_fraction=0.3, causal=False):
    query, key, value = randn(rng, b, h, t, d), randn(rng, b, h, s, d), randn(rng, b, h, s, d)
    if causal:                                       # query i sits at position s - t + i
        mask = np.tril(np.ones((t, s), bool), k=s - t)[None].repeat(b, 0)
    else:
        mask = rng.random((b, t, s)) > masked_fraction
    return query, key, value, mask


def check_attention(query, key, value, mask, scale, head_mask):
    h = query.shape[1]
    head_scale = np.ones(h, np.float32) if head_mask is None else np.asarray(head_mask, np.float32)
    out, probs = engine.attention(query, key, value, mask, scale, head_mask, True)
    naive_out, naive_probs = naive_kernels.attention_naive(query, key, value, mask, scale, head_scale)
    assert out.dtype == np.float32 and out.shape == query.shape
    assert probs.shape == mask.shape[:1] + (h,) + mask.shape[1:]
    assert not np.isnan(out).any() and not np.isnan(probs).any()
    assert rel_err(out, naive_out) < 1e-5
    assert rel_err(probs, naive_probs) < 1e-5
    # masked keys get exactly zero probability; rows with no visible key give zero probs and output
    assert (probs[np.broadcast_to(~mask[:, None], probs.shape)] == 0).all()
    empty = ~mask.any(-1)                                            # [b, t]
    assert (out.transpose(0, 2, 1, 3)[empty] == 0).all()
    # the output without attentions is the same, and no probs are returned
    out_only, none = engine.attention(query, key, value, mask, scale, head_mask, False)
    assert none is None
    np.testing.assert_array_equal(out_only, out)
    # ops agrees on every row that sees at least one key
    ops_out, ops_probs = ops.attention(query, key, value, mask, scale, head_mask, True)
    keep = ~empty
    assert rel_err(out.transpose(0, 2, 1, 3)[keep], ops_out.transpose(0, 2, 1, 3)[keep]) < 1e-5
    assert rel_err(probs.transpose(0, 2, 1, 3)[keep], ops_probs.transpose(0, 2, 1, 3)[keep]) < 1e-5
    return out, probs


@pytest.mark.parametrize("b, h, t, s, d", [(1, 1, 1, 1, 1), (1, 3, 1, 9, 16), (2, 3, 5, 5, 16),
                                           (2, 1, 4, 11, 8), (1, 12, 7, 7, 64)])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_naive_and_ops(b, h, t, s, d, causal):
    rng = np.random.default_rng(b * 100 + h * 10 + t + s)
    query, key, value, mask = attention_case(rng, b, h, t, s, d, causal=causal)
    if not causal and t > 1:
        mask[0, 0] = False                       # one query sees nothing (a left-padded row)
    check_attention(query, key, value, mask, 1.0 / math.sqrt(d), None)


@pytest.mark.parametrize("t, n_past", [(attention_op.ATTENTION_BLAS_MIN_ROWS, 0), (129, 0), (300, 7)])
@pytest.mark.parametrize("mask_kind", ["causal", "left_padded", "random"])
def test_attention_blas_blocks_match_naive(t, n_past, mask_kind):
    # prefill-sized inputs take the BLAS path, in blocks of ATTENTION_BLOCK_ROWS query rows that
    # stop at the last visible key; a left-padded row whose whole first block sees nothing, a
    # partial last block and a cached past must all match the naive twin
    rng = np.random.default_rng(t + n_past)
    s = n_past + t
    query, key, value, mask = attention_case(rng, 2, 3, t, s, 16, causal=mask_kind != "random")
    if mask_kind == "left_padded":
        pad = min(t - 1, attention_op.ATTENTION_BLOCK_ROWS + 5)
        mask[1, :, :n_past + pad] = False        # padding keys are never visible...
        mask[1, :pad, :] = False                 # ...and padding queries see nothing
    assert t >= attention_op.ATTENTION_BLAS_MIN_ROWS
    check_attention(query, key, value, mask, 1.0 / math.sqrt(16), np.array([1.0, 0.5, 0.0], np.float32))


def test_attention_head_mask_and_scale():
    rng = np.random.default_rng(7)
    query, key, value, mask = attention_case(rng, 2, 3, 4, 6, 8)
    head_mask = np.array([1.0, 0.0, 0.5], np.float32)
    out, probs = check_attention(query, key, value, mask, 0.125 / 3, head_mask)
    assert (probs[:, 1] == 0).all() and (out[:, 1] == 0).all()


def test_attention_reads_strided_cache_views():
    # key/value as the KV cache hands them out: [:, :, :length] of a longer preallocated buffer,
    # and a query that is a transposed head split of a [b, t, h, d] projection
    rng = np.random.default_rng(8)
    b, h, t, length, d = 2, 3, 1, 6, 16
    key_buf, value_buf = randn(rng, b, h, 20, d), randn(rng, b, h, 20, d)
    query = randn(rng, b, t, h, d).transpose(0, 2, 1, 3)
    mask = np.ones((b, t, length), bool)
    mask[1, :, :2] = False                                   # left padding in row 1
    out, _ = check_attention(query, key_buf[:, :, :length], value_buf[:, :, :length], mask, 0.25, None)
    contiguous, _ = engine.attention(np.ascontiguousarray(query), key_buf[:, :, :length].copy(),
                                      value_buf[:, :, :length].copy(), mask, 0.25)
    # same values; not bit-identical, as a strided layout vectorises the dot products differently
    np.testing.assert_allclose(out, contiguous, rtol=1e-6, atol=1e-6)


def test_attention_fully_masked_everything_is_zero_not_nan():
    rng = np.random.default_rng(9)
    query, key, value, _ = attention_case(rng, 1, 3, 2, 4, 8)
    value[:] = np.nan                           # never read: no visible key
    out, probs = engine.attention(query, key, value, np.zeros((1, 2, 4), bool), 0.5, None, True)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(probs, 0.0)


def test_attention_masked_nan_key_does_not_poison_rows():
    # PITFALLS 3: a NaN in a padded key/value must not reach a real row (0 * NaN = NaN)
    rng = np.random.default_rng(10)
    query, key, value, _ = attention_case(rng, 1, 1, 1, 3, 4)
    key[0, 0, 0] = np.nan
    value[0, 0, 0] = np.nan
    mask = np.array([[[False, True, True]]])
    out, probs = engine.attention(query, key, value, mask, 0.5, None, True)
    assert np.isfinite(out).all() and np.isfinite(probs).all()


@pytest.mark.parametrize("t", [1, 2, attention_op.ATTENTION_BLAS_MIN_ROWS])
def test_attention_nan_in_masked_keys_among_visible_ones(t):
    # the decode kernel takes keys four at a time and the prefill path uses BLAS: masked keys
    # holding NaN, inside groups of four that also hold visible keys, must stay out of every row
    rng = np.random.default_rng(t)
    s = 13
    query, key, value, _ = attention_case(rng, 2, 3, t, s, 8)
    mask = np.ones((2, t, s), bool)
    masked = [0, 2, 5, 9, 12]                      # scattered over the groups 0-3, 4-7, 8-11 and the tail
    mask[:, :, masked] = False
    clean_key, clean_value = key.copy(), value.copy()
    key[:, :, masked] = np.nan
    value[:, :, masked] = np.nan
    out, probs = engine.attention(query, key, value, mask, 0.5, None, True)
    assert np.isfinite(out).all() and np.isfinite(probs).all()
    expected, _ = naive_kernels.attention_naive(query, clean_key, clean_value, mask, 0.5, np.ones(3, np.float32))
    assert rel_err(out, expected) < 1e-5
    ops_out, _ = ops.attention(query, key, value, mask, 0.5, None, False)   # the NumPy reference too
    assert rel_err(ops_out, expected) < 1e-5


def test_attention_bad_shapes_raise_value_error():
    q = np.zeros((1, 2, 3, 4), np.float32)
    kv = np.zeros((1, 2, 5, 4), np.float32)
    with pytest.raises(ValueError, match="mask"):
        engine.attention(q, kv, kv, np.ones((1, 3, 4), bool), 1.0)
    with pytest.raises(ValueError, match="key and value"):
        engine.attention(q, kv, kv[:, :, :4], np.ones((1, 3, 5), bool), 1.0)
    with pytest.raises(ValueError, match="head_mask"):
        engine.attention(q, kv, kv, np.ones((1, 3, 5), bool), 1.0, np.ones(3, np.float32))


def test_attention_random_shapes_and_masks():
    # hypothesis is optional ([test] extra): without it this test alone skips, not the module
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=25, deadline=None)
    @hypothesis.given(b=st.integers(1, 2), h=st.sampled_from([1, 3]), t=st.integers(1, 6), extra=st.integers(0, 5),
                      d=st.sampled_from([1, 4, 16]), seed=st.integers(0, 2**16), masked=st.floats(0.0, 1.0))
    def check(b, h, t, extra, d, seed, masked):
        rng = np.random.default_rng(seed)
        query, key, value, mask = attention_case(rng, b, h, t, t + extra, d, masked_fraction=masked)
        check_attention(query, key, value, mask, 1.0 / math.sqrt(d), None)

    check()
