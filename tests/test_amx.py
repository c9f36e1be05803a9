"""set_float32_matmul_precision("medium"): prefill matmuls and attention on AMX tiles (amx.py).

The AMX kernels round both operands of each product to bfloat16 and sum in float32. Expected
values come from NumPy doing exactly that (operands rounded with safetensors.float32_to_bfloat16,
sums in float64), so a wrong tile layout, stride, padding or mask shows as an O(1) error while
the accepted difference is float32 summation order. The model-level tests check that the
setting reaches the kernels, stays within bfloat16 drift of float32, and changes nothing where
it must not (decode steps, "highest", machines without AMX).

On a CPU without AMX, conftest.py sets MINIGPT2_AMX=emulate, so these tests run amx.py on
amx_emulation.py's stand-ins for the tile instructions; with AMX they run the instructions.
"""

import os
import subprocess
import sys

import numpy as np
import packing_reference
import pytest

from minigpt2 import bench, engine, ops
from minigpt2.engine import amx, policy
from minigpt2.config import GPT2Config
from minigpt2.model import GPT2LMHeadModel
from minigpt2.weights.packed import PackedWeight
from minigpt2.weights.safetensors import bfloat16_to_float32, float32_to_bfloat16

needs_amx = pytest.mark.skipif(not amx.available(),
                               reason="this CPU (or OS) has no AMX and MINIGPT2_AMX is set to '' (not 'emulate')")


def test_amx_path_runs_on_every_machine():
    """The AMX tests skip only when someone turned the emulation off on a CPU without AMX."""
    if os.environ.get("MINIGPT2_AMX") == "":
        pytest.skip("MINIGPT2_AMX='' turns the emulation off")
    assert amx.available()
    assert amx.EMULATED == (os.environ.get("MINIGPT2_AMX") == "emulate")


def test_unknown_amx_mode_is_refused():
    result = subprocess.run([sys.executable, "-c", "import minigpt2.engine"], capture_output=True, text=True,
                            env={**os.environ, "MINIGPT2_AMX": "yes"}, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode != 0
    assert "ValueError: MINIGPT2_AMX='yes': set it to 'emulate'" in result.stderr


def bf16(a):
    """float32 values rounded to bfloat16, as float64."""
    return bfloat16_to_float32(float32_to_bfloat16(np.asarray(a, np.float32))).astype(np.float64)


@pytest.fixture
def medium():
    engine.set_float32_matmul_precision("medium")
    yield
    engine.set_float32_matmul_precision("highest")


def test_precision_setting():
    assert engine.get_float32_matmul_precision() == "highest"
    for precision in ("high", "medium", "highest"):
        engine.set_float32_matmul_precision(precision)
        assert engine.get_float32_matmul_precision() == precision
    with pytest.raises(ValueError, match="precision must be one of"):
        engine.set_float32_matmul_precision("low")
    assert engine.get_float32_matmul_precision() == "highest"


def test_precision_setting_exported():
    import minigpt2
    assert minigpt2.set_float32_matmul_precision is engine.set_float32_matmul_precision
    assert minigpt2.get_float32_matmul_precision is engine.get_float32_matmul_precision


# shapes: multiples of 32 and not (inputs, outputs and rows are padded to 32 inside)
LINEAR_CASES = [(33, 64, 96), (40, 80, 70), (100, 768, 2304), (77, 96, 50), (64, 3072, 64)]


@needs_amx
@pytest.mark.parametrize("storage", ["float32", "float32-transposed", "bfloat16", "float16", "int8"])
@pytest.mark.parametrize("m,n_in,n_out", LINEAR_CASES)
@pytest.mark.parametrize("apply_gelu", [False, True])
def test_linear_matches_bfloat16_products(medium, storage, m, n_in, n_out, apply_gelu):
    rng = np.random.default_rng(m * n_in + n_out)
    x = rng.standard_normal((m, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    if storage == "float32":
        weight, expected_weight = w, bf16(w)
    elif storage == "float32-transposed":               # an [n_out, n_in] array seen as .T (wte.T)
        weight = np.ascontiguousarray(w.T).T
        expected_weight = bf16(w)
    else:
        weight = PackedWeight.pack(w, storage)
        # the packing rules from their definitions; int8 values are exact in bfloat16 and the
        # kernel multiplies the float32 sum by the scale
        if storage == "int8":
            q, scale = packing_reference.int8_per_channel(w)
            expected_weight = q * scale
        else:
            expected_weight = bf16(packing_reference.dequantized(w, storage).astype(np.float32))
    expected = bf16(x) @ expected_weight
    expected = expected + bias
    if apply_gelu:
        expected = ops.gelu_new(expected.astype(np.float32))
    got = (engine.linear_gelu if apply_gelu else engine.linear)(x, weight, bias)
    assert got.shape == (m, n_out) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def attention_with_bfloat16_products(q, k, v, mask, scale, head_scale):
    """What amx.attention computes: q, k, v and the softmax weights rounded to bfloat16, each
    row normalised by the sum of its rounded weights; a row with no visible key is zero."""
    scores = np.einsum("bhtd,bhsd->bhts", bf16(q), bf16(k)) * scale
    scores = np.where(mask[:, None], scores, -np.inf)
    row_max = scores.max(-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = bf16(np.exp(scores - row_max))
    total = weights.sum(-1, keepdims=True)
    out = np.einsum("bhts,bhsd->bhtd", weights, bf16(v)) / np.where(total > 0, total, 1.0)
    return out * head_scale[None, :, None, None]


@needs_amx
@pytest.mark.parametrize("b,h,t,s,d", [(1, 2, 40, 40, 64), (2, 3, 70, 75, 64), (1, 12, 256, 256, 64),
                                       (1, 1, 33, 100, 32), (2, 2, 48, 48, 96)])
def test_attention_matches_bfloat16_products(medium, b, h, t, s, d):
    rng = np.random.default_rng(t * s + d)
    q, k, v = (rng.standard_normal((b, h, n, d)).astype(np.float32) for n in (t, s, s))
    mask = np.broadcast_to(np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t), (b, t, s)).copy()
    if b > 1:
        mask[1, :, :7] = False           # left padding in the second row
        mask[1, :3, :] = False           # and query rows that see no key at all
    head_scale = rng.uniform(0.5, 1.5, h).astype(np.float32)
    expected = attention_with_bfloat16_products(q, k, v, mask, 0.125, head_scale)
    got, probs = engine.attention(q, k, v, mask, 0.125, head_mask=head_scale)
    assert probs is None and got.shape == (b, h, t, d)
    # summation order moves a score by ~1e-7, which can flip the bfloat16 rounding of a weight
    # (2**-8 relative): allowed, where a layout or mask error is O(1)
    assert np.abs(got - expected).max() < 3e-3
    if b > 1:
        assert (got[1, :, :3] == 0).all()
    exact, _ = engine.attention(q, k, v, mask, 0.125, head_mask=head_scale)
    assert np.array_equal(got, exact)          # deterministic


@needs_amx
def test_attention_ignores_nonfinite_padding_keys(medium):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 40, 64)).astype(np.float32) for _ in range(3))
    mask = np.broadcast_to(np.tril(np.ones((40, 40), bool)), (2, 40, 40)).copy()
    mask[1, :, :5] = False
    k[1, :, :5], v[1, :, :5] = np.nan, np.inf
    got, _ = engine.attention(q, k, v, mask, 0.125)
    assert np.isfinite(got).all()
    clean_k, clean_v = k.copy(), v.copy()
    clean_k[1, :, :5] = clean_v[1, :, :5] = 0.0
    assert np.array_equal(got, engine.attention(q, clean_k, clean_v, mask, 0.125)[0])


@needs_amx
def test_medium_reaches_amx_for_prefills_and_batches_over_stored_bfloat16(medium, monkeypatch):
    calls = []
    monkeypatch.setattr(amx, "linear", lambda *args: calls.append(args[0].shape[0]) or args[-1])
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    packed = {storage: PackedWeight.pack(w, storage) for storage in ("bfloat16", "int8")}
    limit = policy.PACKED_MATVEC_MAX_ROWS
    for m in (1, policy.AMX_STORED_MIN_ROWS - 1, limit):      # decode-sized: float32 kernels
        engine.linear(rng.standard_normal((m, 64)), w, None)
        engine.linear(rng.standard_normal((m, 64)), packed["int8"], None)   # would be converted per call
    engine.linear(rng.standard_normal((1, 64)), packed["bfloat16"], None)
    assert calls == []
    # a batch over a bfloat16 weight used as stored: AMX from AMX_STORED_MIN_ROWS rows on
    engine.linear(rng.standard_normal((policy.AMX_STORED_MIN_ROWS, 64)), packed["bfloat16"], None)
    engine.linear(rng.standard_normal((limit + 1, 64)), w, None)                # a prefill: any weight
    engine.linear(rng.standard_normal((limit + 1, 64)), packed["int8"], None)
    assert calls == [policy.AMX_STORED_MIN_ROWS, limit + 1, limit + 1]
    engine.set_float32_matmul_precision("highest")
    engine.linear(rng.standard_normal((100, 64)), w, None)
    assert len(calls) == 3


def test_medium_without_amx_changes_nothing(monkeypatch):
    """On a CPU without AMX, "medium" computes exactly what "highest" does."""
    monkeypatch.setattr(amx, "_available", False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    q, k, v = (rng.standard_normal((1, 2, 40, 32)).astype(np.float32) for _ in range(3))
    mask = np.broadcast_to(np.tril(np.ones((40, 40), bool)), (1, 40, 40))
    before = engine.linear(x, w, None), engine.attention(q, k, v, mask, 0.125)[0]
    try:
        engine.set_float32_matmul_precision("medium")
        after = engine.linear(x, w, None), engine.attention(q, k, v, mask, 0.125)[0]
    finally:
        engine.set_float32_matmul_precision("highest")
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    # head_dim 64 as in every GPT-2 size, so attention takes the AMX path too
    config = GPT2Config(vocab_size=512, n_positions=160, n_embd=128, n_layer=2, n_head=2)
    return bench.write_random_checkpoint(tmp_path_factory.mktemp("amx_model"), "amx-test", seed=3, std=0.1,
                                         config=config)


@needs_amx
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_model_prefill_within_bfloat16_drift_and_decode_unchanged(model_folder, dtype):
    model = GPT2LMHeadModel.from_pretrained(model_folder, dtype=dtype)
    ids = np.random.default_rng(5).integers(0, 512, size=(2, 120))
    attention_mask = np.ones_like(ids)
    attention_mask[1, :9] = 0                                           # left padding
    exact = model(ids, attention_mask=attention_mask, use_cache=True)
    engine.set_float32_matmul_precision("medium")
    try:
        fast = model(ids, attention_mask=attention_mask, use_cache=True)
        step = model(ids[:, :1], attention_mask=np.concatenate([attention_mask, np.ones((2, 1), int)], axis=1),
                     past_key_values=fast.past_key_values)
    finally:
        engine.set_float32_matmul_precision("highest")
    real = attention_mask.astype(bool)
    scale = np.abs(exact.logits[real]).max()
    drift = np.abs(fast.logits - exact.logits)[real].max() / scale
    # the yardstick: what storing the weights in bfloat16 (float32 products) already moves
    stored = GPT2LMHeadModel.from_pretrained(model_folder, dtype="bfloat16")(ids, attention_mask=attention_mask)
    storage_drift = np.abs(stored.logits - GPT2LMHeadModel.from_pretrained(model_folder)(
        ids, attention_mask=attention_mask).logits)[real].max() / scale
    assert 1e-6 < drift < 3 * storage_drift         # changed, but by bfloat16-sized amounts
    assert (fast.logits.argmax(-1) == exact.logits.argmax(-1))[real].mean() > 0.95
    # the decode step after an AMX prefill runs the float32 kernels on the cache it left
    exact_step = model(ids[:, :1], attention_mask=np.concatenate([attention_mask, np.ones((2, 1), int)], axis=1),
                       past_key_values=exact.past_key_values)
    assert np.abs(step.logits - exact_step.logits).max() < 3e-2 * np.abs(exact_step.logits).max()


@needs_amx
def test_batched_decode_over_bfloat16_weights(model_folder):
    """A batch of AMX_STORED_MIN_ROWS sequences decoded together over bfloat16 weights takes the
    AMX kernel in "medium" and stays within bfloat16 drift of the float32 products."""
    model = GPT2LMHeadModel.from_pretrained(model_folder, dtype="bfloat16")
    ids = np.random.default_rng(6).integers(0, 512, size=(policy.AMX_STORED_MIN_ROWS, 20))
    prompt = model(ids, use_cache=True)
    step_ids = prompt.logits[:, -1].argmax(-1)[:, None]
    exact = model(step_ids, past_key_values=prompt.past_key_values).logits
    prompt = model(ids, use_cache=True)                      # a fresh cache for the second step
    engine.set_float32_matmul_precision("medium")
    try:
        fast = model(step_ids, past_key_values=prompt.past_key_values).logits
    finally:
        engine.set_float32_matmul_precision("highest")
    drift = np.abs(fast - exact).max() / np.abs(exact).max()
    assert 1e-7 < drift < 2e-2
    assert (fast.argmax(-1) == exact.argmax(-1)).mean() >= 0.75


def test_emulated_tile_product_follows_the_sdm_order():
    """amx_emulation's TDPBF16PS: sums [32, 32] += A [32, 32 inputs] @ B [32 inputs, 32], in the
    order of Intel's pseudo-code (per pair k: += A[m, 2k] B[2k, n], then += A[m, 2k + 1] B[2k + 1, n],
    each rounded to float32), bit for bit; the four 16x16 tiles stored where _sums_store puts them."""
    from minigpt2.engine import amx_emulation
    rng = np.random.default_rng(11)
    a = float32_to_bfloat16(rng.standard_normal((32, 32)).astype(np.float32))       # [rows, inputs] bits
    b = float32_to_bfloat16(rng.standard_normal((32, 32)).astype(np.float32))       # [inputs, columns]
    # B as tiles read it: row k holds inputs 2k and 2k + 1 of each column side by side
    b_pairs = np.ascontiguousarray(b.reshape(16, 2, 32).transpose(0, 2, 1)).reshape(16, 64)   # [16, 32 x 2]
    tiles = amx_emulation.tiles_configure(0)
    amx_emulation.sums_zero(tiles)
    for _ in range(2):                                                   # two steps: sums carry over
        amx_emulation.sums_add_products(tiles, a.ctypes.data, 64, b_pairs.ctypes.data, 128)
    out = np.zeros((32, 32), np.float32)
    amx_emulation.sums_store(tiles, out.ctypes.data, 128)
    a32, b32 = bfloat16_to_float32(a), bfloat16_to_float32(b)
    expected = np.zeros((32, 32), np.float32)
    for _ in range(2):
        for k in range(16):
            expected = expected + a32[:, 2 * k, None] * b32[None, 2 * k]             # float32 adds
            expected = expected + a32[:, 2 * k + 1, None] * b32[None, 2 * k + 1]
    np.testing.assert_array_equal(out, expected)
