"""What this CPU offers the kernels: its name and instruction-set features, as LLVM sees them.

The kernels are compiled by LLVM for the host CPU, so LLVM's view of the host is the one that
decides which instructions a kernel may use. `features()` is read once per process.
"""

import functools
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
