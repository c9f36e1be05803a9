"""Every CPU-specific path of the engine, tested on every machine.

The int8 decode loops are written for the CPU's vector width: 512 bits with AVX-512, 256 with
AVX2 only (engine/cpu.py `vector_bits`). Each width is exercised here on whatever CPU runs the
tests: natively where the CPU has it, and elsewhere as LLVM lowers it (a 512-bit loop split in
two on an AVX2 CPU; a 256-bit loop on an AVX-512 one is native too). Each run is a fresh process
with its own Numba cache, since the width is fixed when the kernels compile.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minigpt2.engine import cpu

REPO = Path(__file__).resolve().parent.parent


def run_in_fresh_process(args, bits, tmp_path):
    env = {**os.environ, "MINIGPT2_VECTOR_BITS": bits, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)


@pytest.mark.parametrize("bits", ["256", "512"])
def test_int8_decode_kernels_at_each_vector_width(bits, tmp_path):
    lanes = run_in_fresh_process(["-c", "from minigpt2.engine import matvec; print(matvec.DOT_LANES)"], bits, tmp_path)
    assert lanes.stdout.split() == [str(int(bits) // 32)], lanes.stderr
    result = run_in_fresh_process(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_quantize.py",
                                   "-k", "test_linear_on_packed_weights and int8"], bits, tmp_path)
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_default_width_follows_the_cpu(monkeypatch):
    monkeypatch.delenv("MINIGPT2_VECTOR_BITS", raising=False)
    assert cpu.vector_bits() == (512 if "avx512f" in cpu.features() else 256)
    monkeypatch.setenv("MINIGPT2_VECTOR_BITS", "128")
    with pytest.raises(ValueError, match="MINIGPT2_VECTOR_BITS must be 256 or 512"):
        cpu.vector_bits()
