"""int8_dot.py: integer dot products over int8 weights with int8 activations (set_int8_compute).

The expected values are computed here from the definition (module docstring of int8_dot.py) in
NumPy: the activations' rounding exactly, the integer block sums exactly (int64), the rest in
float64. Every instruction path (VNNI, AVX2, the emulation) runs in a fresh process of its own,
natively where this CPU has the instructions, and must give the same bits as the others.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import GPT2Config, GPT2LMHeadModel, get_int8_compute, set_int8_compute
from minigpt2.bench import write_random_checkpoint
from minigpt2.engine import cpu, int8_dot, linear

REPO = Path(__file__).resolve().parent.parent


def quantize_reference(x):
    """x [n] -> (q [n] int8, scales [n / 32] float32), as the module docstring defines them."""
    blocks = x.astype(np.float32).reshape(-1, 32)
    largest = np.abs(blocks).max(axis=1)
    with np.errstate(divide="ignore"):
        inverse = np.where(largest > 0, np.float32(127.0) / largest, np.float32(0.0)).astype(np.float32)
    q = np.rint(blocks * inverse[:, None]).astype(np.int8).ravel()
    return q, (largest / np.float32(127.0)).astype(np.float32)


def matvec_reference(x, data, scale, bias):
    """x [n_in] float32 @ (int8 data [n_out, n_in] * scale).T + bias with int8 activations."""
    q, scales = quantize_reference(x)
    block_sums = (q.astype(np.int64).reshape(1, -1, 32) * data.astype(np.int64).reshape(data.shape[0], -1, 32)).sum(-1)
    return (block_sums * scales.astype(np.float64)).sum(axis=1) * scale + bias     # [n_out] float64


@pytest.fixture
def int8_compute():
    """Sets int8 activations for the test, then puts the default back."""
    set_int8_compute("int8")
    yield
    set_int8_compute("float32")


def test_quantize_blocks_rounds_as_defined():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(320).astype(np.float32) * np.repeat(rng.random(10).astype(np.float32) * 10, 32)
    x[32:64] = 0.0                                      # an all-zero block: scale 0, q 0
    x[64] = 1e30                                       # a block with one huge value
    q, scales = np.empty(320, np.int8), np.empty(10, np.float32)
    int8_dot.quantize_blocks(x, q, scales)
    expected_q, expected_scales = quantize_reference(x)
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(scales, expected_scales)
    assert np.abs(q).max() == 127 and scales[1] == 0 and not q[32:64].any()


@pytest.mark.parametrize("n_out, n_in", [(7, 32), (64, 256), (300, 768)])
def test_the_kernel_against_the_definition(n_out, n_in):
    rng = np.random.default_rng(n_in)
    x = rng.standard_normal(n_in).astype(np.float32)
    data = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    scale, bias = rng.random(n_out).astype(np.float32), rng.standard_normal(n_out).astype(np.float32)
    q, scales = np.empty(n_in, np.int8), np.empty(n_in // 32, np.float32)
    int8_dot.quantize_blocks(x, q, scales)
    out = np.empty(n_out, np.float32)
    int8_dot.matvec_int8_blocks(q, scales, data, scale, bias, False, 0, out)
    expected = matvec_reference(x, data, scale, bias)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


PATH_SCRIPT = """
import numpy as np
from minigpt2.engine import int8_dot
rng = np.random.default_rng(7)
x = rng.standard_normal(768).astype(np.float32)
data = rng.integers(-127, 128, (257, 768)).astype(np.int8)
scale, bias = rng.random(257).astype(np.float32), rng.standard_normal(257).astype(np.float32)
q, scales = np.empty(768, np.int8), np.empty(24, np.float32)
int8_dot.quantize_blocks(x, q, scales)
out = np.empty(257, np.float32)
int8_dot.matvec_int8_blocks(q, scales, data, scale, bias, True, 3, out)
print(int8_dot.PATH, out.tobytes().hex())
"""


def native_paths():
    return [path for path, needs in (("vnni", {"avx512vnni", "avx512vl", "avx2"}), ("avx2", {"avx2"}))
            if needs <= cpu.features()]


@pytest.mark.parametrize("path", ["vnni", "avx2", "emulate"])
def test_every_instruction_path_gives_the_same_bits(path, tmp_path):
    if path != "emulate" and path not in native_paths():
        pytest.skip(f"this CPU ({cpu.name()}) lacks the {path} instructions; the emulation covers their arithmetic")
    results = {}
    for run in sorted({path, "emulate"}):
        env = {**os.environ, "MINIGPT2_INT8_DOT": run, "NUMBA_CACHE_DIR": str(tmp_path / run)}
        done = subprocess.run([sys.executable, "-c", PATH_SCRIPT], capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        name, bits = done.stdout.split()
        assert name == run
        results[run] = bits
    assert results[path] == results["emulate"]


def test_asking_for_missing_instructions_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MINIGPT2_INT8_DOT", "sse9")
    with pytest.raises(ValueError, match="MINIGPT2_INT8_DOT must be one of"):
        cpu.int8_dot_path()
    monkeypatch.setattr(cpu, "features", lambda: frozenset({"sse2"}))
    monkeypatch.setenv("MINIGPT2_INT8_DOT", "vnni")
    with pytest.raises(ValueError, match="lacks the instructions"):
        cpu.int8_dot_path()


def test_set_int8_compute_checks_its_value():
    with pytest.raises(ValueError, match="int8 compute must be one of"):
        set_int8_compute("int4")
    assert get_int8_compute() == "float32"


def test_linear_takes_the_integer_kernel_for_one_row_only(int8_compute):
    from minigpt2.weights.packed import PackedWeight
    rng = np.random.default_rng(3)
    weight = rng.normal(0, 0.1, (96, 64)).astype(np.float32)           # [n_in, n_out]
    packed = PackedWeight.pack(weight, "int8")
    bias = rng.standard_normal(64).astype(np.float32)
    x = rng.standard_normal((1, 96)).astype(np.float32)
    expected = matvec_reference(x[0], packed.data, packed.scale, bias)
    np.testing.assert_allclose(linear(x, packed, bias)[0], expected, rtol=1e-5, atol=1e-5)
    rows = rng.standard_normal((3, 96)).astype(np.float32)             # 3 rows: float32 activations
    float_result = rows @ np.asarray(packed) + bias
    np.testing.assert_allclose(linear(rows, packed, bias), float_result, rtol=1e-5, atol=1e-4)


def test_a_model_decodes_with_int8_activations(tmp_path, int8_compute):
    folder = write_random_checkpoint(tmp_path, config=GPT2Config(n_embd=160, n_layer=2, n_head=5, vocab_size=300,
                                                                 n_positions=32), std=0.2)
    model = GPT2LMHeadModel.from_pretrained(folder, dtype="int8")
    prompt = np.random.default_rng(4).integers(0, 300, (1, 6))

    def steps(fused):
        model.transformer.fused_decode = fused
        out = model(prompt, use_cache=True)
        cache, token, logits = out.past_key_values, out.logits[:, -1].argmax(-1)[:, None], []
        for _ in range(6):
            out = model(token, past_key_values=cache, use_cache=True)
            logits.append(out.logits[0, -1])
            token = out.logits[:, -1].argmax(-1)[:, None]
        return np.array(logits)
    fused, by_ops = steps(True), steps(False)
    np.testing.assert_array_equal(fused, by_ops)              # the fused step takes the same kernel
    set_int8_compute("float32")
    float_activations = steps(True)
    assert not np.array_equal(fused, float_activations)       # the setting changed the arithmetic
    drift = np.abs(fused - float_activations).max() / np.abs(float_activations).max()
    assert drift < 0.1
