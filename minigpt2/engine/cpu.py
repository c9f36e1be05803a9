"""What this CPU offers the kernels: its name and instruction-set features, as LLVM sees them.

The kernels are compiled by LLVM for the host CPU, so LLVM's view of the host is the one that
decides which instructions a kernel may use. `features()` is read once per process.
"""

import functools
import os
import platform

import llvmlite.binding


@functools.cache
def features():
    """The host CPU's features as a set of LLVM names ("avx2", "f16c", "avx512f", "amx-bf16", ...)."""
    try:
        return frozenset(name for name, on in llvmlite.binding.get_host_cpu_features().items() if on)
    except RuntimeError:            # an architecture LLVM cannot query
        return frozenset()


def name():
    """The host CPU as LLVM names it ("znver4", "emeraldrapids", ...)."""
    return llvmlite.binding.get_host_cpu_name()


def has_hardware_half():
    """Whether LLVM widens a float16 to float32 in one instruction (x86 F16C, 64-bit ARM).

    Elsewhere LLVM would call a runtime helper that Numba's JIT may not link, so the kernels use
    an arithmetic conversion instead (matvec.py).
    """
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    return "f16c" in features()


def vector_bits():
    """The widest float vector the kernels' hand-written loops use: 512 with AVX-512, else 256.

    MINIGPT2_VECTOR_BITS=256 or 512 overrides it, so that the tests run both widths on any x86 CPU
    (LLVM splits a 512-bit loop in two where AVX-512 is missing: slower, still exact). Read once per
    process, before the kernels compile.
    """
    override = os.environ.get("MINIGPT2_VECTOR_BITS")
    if override is not None:
        if override not in ("256", "512"):
            raise ValueError(f"MINIGPT2_VECTOR_BITS must be 256 or 512, got {override!r}")
        return int(override)
    return 512 if "avx512f" in features() else 256
