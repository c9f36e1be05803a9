"""Low-precision weight storage (minigpt2.quantize) and the packed decode kernel.

Expected values: the packing rules by hand (bfloat16 = the top half of a float32, rounded to
nearest even; float16 = NumPy's IEEE half; int8 = round(w / s), s = max|w| / 127 per output), and
matrix products in float64 on the weights those rules give, written out in packing_reference.py
(never PackedWeight's own dequantization).
"""

from pathlib import Path

import numpy as np
import pytest
from numba import njit

import naive_kernels
import packing_reference
from minigpt2 import engine
from minigpt2.engine import matvec, policy
from minigpt2.model import GPT2LMHeadModel
from minigpt2.quantize import convert_model, weight_bytes
from minigpt2.weights.packed import DTYPES, PackedWeight

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
STORAGES = DTYPES[1:]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape and np.isfinite(a).all()
    return np.abs(a - b).max() / np.abs(b).max()


def test_packing_rules_by_hand():
    w = np.array([[1.0, -2.0], [0.5, 3.0], [1.00390625, -127.0]], np.float32)   # [n_in 3, n_out 2]
    bf16 = PackedWeight.pack(w, "bfloat16")
    assert bf16.shape == (3, 2) and bf16.data.shape == (2, 3)        # stored one output per row
    # 1.00390625 = 1 + 2**-8 is halfway between two bfloat16 values: ties to even -> 1.0
    np.testing.assert_array_equal(np.asarray(bf16), [[1.0, -2.0], [0.5, 3.0], [1.0, -127.0]])
    f16 = PackedWeight.pack(w, "float16")
    np.testing.assert_array_equal(np.asarray(f16), w)                  # all exact in float16
    q = PackedWeight.pack(w, "int8")
    np.testing.assert_allclose(q.scale, [1.00390625 / 127, 127.0 / 127], rtol=1e-7)
    np.testing.assert_array_equal(q.data, [[127, 63, 127], [-2, 3, -127]])
    assert np.abs(np.asarray(q) - w).max() <= q.scale.max() / 2 + 1e-7
    with pytest.raises(ValueError, match="storage"):
        PackedWeight.pack(w, "int4")
    with pytest.raises(ValueError, match="65504"):
        PackedWeight.pack(np.array([[1e5]], np.float32), "float16")


def test_transpose_and_row_lookup_share_the_data():
    rng = np.random.default_rng(0)
    wte = rng.standard_normal((11, 4)).astype(np.float32)            # [v, c], as the embedding
    packed = PackedWeight.pack(wte, "bfloat16", rows_are_outputs=False)
    assert packed.shape == (11, 4) and packed.T.shape == (4, 11)
    assert packed.T.data is packed.data
    np.testing.assert_array_equal(np.asarray(packed.T), np.asarray(packed).T)
    ids = np.array([[3, 0], [10, 3]])
    np.testing.assert_array_equal(packed[ids], np.asarray(packed)[ids])   # [2, 2, 4]


@njit
def _widen_all_arithmetic(bits):
    out = np.empty(bits.shape[0], np.float32)
    for i in range(bits.shape[0]):
        out[i] = matvec._float16_to_float32(np.uint16(bits[i]))
    return out


@njit
def _widen_all_hardware(bits):
    out = np.empty(bits.shape[0], np.float32)
    for i in range(bits.shape[0]):
        out[i] = matvec._half_bits_to_float32(bits[i])
    return out


@pytest.mark.parametrize("conversion", ["arithmetic", "hardware"])
def test_float16_widening_is_exact_for_every_bit_pattern(conversion):
    """Both float16 -> float32 conversions (the kernel uses the hardware one where the CPU has
    it, see matvec.HARDWARE_HALF) agree with NumPy on all 65,536 bit patterns."""
    if conversion == "hardware" and not matvec.HARDWARE_HALF:
        pytest.skip("this CPU has no half-to-float instruction; the kernels use the arithmetic one")
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.int16)
    ours = (_widen_all_hardware if conversion == "hardware" else _widen_all_arithmetic)(bits)
    numpy = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(numpy)
    assert np.isnan(ours[nan]).all()
    np.testing.assert_array_equal(ours[~nan].view(np.uint32), numpy[~nan].view(np.uint32))


@pytest.mark.parametrize("serial", [False, True])
@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("rows", [1, 3, 6, policy.PACKED_MATVEC_MAX_ROWS, policy.PACKED_MATVEC_MAX_ROWS + 5])
# n_in: fewer inputs than one vector of the int8 loop (matvec.DOT_LANES), and 4 vectors + 3
@pytest.mark.parametrize("n_in", [matvec.DOT_LANES - 5, 4 * matvec.DOT_LANES + 3])
def test_linear_on_packed_weights(storage, rows, serial, n_in, monkeypatch):
    monkeypatch.setattr(policy, "SERIAL_MAX_ELEMENTS", 1 << 62 if serial else 0)
    monkeypatch.setattr(policy, "BESIDE_BLAS_SERIAL", serial)
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, 45)).astype(np.float32)
    packed = PackedWeight.pack(w, storage)
    bias = rng.standard_normal(45).astype(np.float32)
    dequantized = packing_reference.dequantized(w, storage)
    expected = x @ dequantized + bias
    assert rel_err(engine.linear(x, packed, bias), expected) < 1e-5
    gelu = naive_kernels.gelu_new_naive(expected.astype(np.float32).ravel()).reshape(expected.shape)
    assert rel_err(engine.linear_gelu(x, packed, bias), gelu) < 1e-5
    # the tied LM head: h @ wte.T with wte packed as rows, no bias
    wte_float32 = rng.standard_normal((45, n_in)).astype(np.float32)            # [v, c]
    wte = PackedWeight.pack(wte_float32, storage, rows_are_outputs=False)
    assert rel_err(engine.linear(x, wte.T, None), x @ packing_reference.dequantized(wte_float32.T, storage)) < 1e-5


def with_weights_as_stored(model, storage):
    """The float32 model with the weights convert_model packs replaced by what `storage` holds,
    by the rules' definitions (packing_reference), as float32."""
    for block in model.transformer.h:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            layer.weight = packing_reference.dequantized(layer.weight, storage).astype(np.float32)
    wte = model.transformer.wte.weight                                          # [v, c]: one row per output
    model.transformer.wte.weight = packing_reference.dequantized(wte.T, storage).T.astype(np.float32)
    model.lm_head.weight = model.transformer.wte.weight
    return model


@pytest.fixture(scope="module")
def reference_logits():
    model = GPT2LMHeadModel.from_pretrained(FIXTURES / "odd", backend="numpy")
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(2, 9))
    return ids, model(ids).logits, weight_bytes(model)


# bfloat16 keeps 8 significant bits, float16 11, int8 about 7 (per channel): max relative drift
DRIFT = {"bfloat16": 2e-2, "float16": 3e-3, "int8": 5e-2}


@pytest.mark.parametrize("storage", STORAGES)
def test_converted_model_close_to_float32_and_backends_agree(storage, reference_logits):
    ids, float32_logits, float32_bytes = reference_logits
    logits = {}
    for backend in ("numpy", "numba"):
        model = convert_model(GPT2LMHeadModel.from_pretrained(FIXTURES / "odd", backend=backend), storage)
        assert model.lm_head.weight is model.transformer.wte.weight                  # still tied, one packed array
        assert weight_bytes(model) < 0.6 * float32_bytes
        logits[backend] = model(ids).logits
        # cached decoding over packed weights equals the full pass
        out = model(ids[:, :5], use_cache=True)
        steps = [out.logits[:, -1]]
        for j in range(5, ids.shape[1]):
            out = model(ids[:, j:j + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits[:, -1])
        assert rel_err(np.stack(steps, 1), logits[backend][:, 4:]) < 1e-5
    assert rel_err(logits["numba"], logits["numpy"]) < 1e-5
    assert 0 < rel_err(logits["numba"], float32_logits) < DRIFT[storage]
    expected = with_weights_as_stored(GPT2LMHeadModel.from_pretrained(FIXTURES / "odd", backend="numpy"), storage)
    assert rel_err(logits["numba"], expected(ids).logits) < 1e-5


def test_convert_model_rejects_unknown_dtype():
    model = GPT2LMHeadModel.from_pretrained(FIXTURES / "tiny", backend="numpy")
    with pytest.raises(ValueError, match="dtype"):
        convert_model(model, "fp8")
    assert convert_model(model, "float32") is model


@pytest.mark.parametrize("storage", STORAGES)
def test_save_and_load_converted(storage, tmp_path, reference_logits):
    from minigpt2.quantize import save_converted
    from minigpt2.weights.safetensors import load_metadata

    ids = reference_logits[0]
    model = convert_model(GPT2LMHeadModel.from_pretrained(FIXTURES / "odd", backend="numba"), storage)
    save_converted(model, tmp_path / "converted")
    assert load_metadata(tmp_path / "converted" / "model.safetensors")["minigpt2.dtype"] == storage
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "converted", backend="numba")
    assert isinstance(loaded.transformer.h[0].mlp.c_fc.weight, PackedWeight)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    np.testing.assert_array_equal(loaded(ids).logits, model(ids).logits)      # the same packed values
    assert weight_bytes(loaded) == weight_bytes(model)


def test_load_converted_rejects_an_ordinary_checkpoint():
    from minigpt2.quantize import load_converted_weights
    with pytest.raises(ValueError, match="save_converted"):
        load_converted_weights(FIXTURES / "odd")
