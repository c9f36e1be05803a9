"""What this CPU offers the kernels: its name and instruction-set features, as LLVM sees them.

The kernels are compiled by LLVM for the host CPU, so LLVM's view of the host is the one that
decides which instructions a kernel may use. `features()` is read once per process.
"""

import ctypes
import functools
import os
import platform
import sys

import llvmlite.binding

_ARCH_REQ_XCOMP_PERM = 0x1023     # arch_prctl: ask the kernel for an extended CPU state
_XFEATURE_XTILEDATA = 18          # ... the AMX tile data
_SYS_ARCH_PRCTL = 158             # x86-64 syscall number


def _amx_emulation_requested():
    value = os.environ.get("MINIGPT2_AMX", "")
    if value not in ("", "emulate"):
        raise ValueError(f"MINIGPT2_AMX={value!r}: set it to 'emulate' (AMX in software, for tests) or unset it")
    return value == "emulate"


# MINIGPT2_AMX=emulate: amx.py's kernels run on amx_emulation.py's stand-ins for the tile
# instructions. Read once, at import: the kernels are compiled for one or the other.
AMX_EMULATED = _amx_emulation_requested()


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


def enable_amx():
    """Whether this process may run amx.py's kernels, asking Linux for the tile state if so.

    Needs an x86-64 Linux CPU with the amx-tile and amx-bf16 features, and the kernel's
    permission for this process to use the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, Linux
    5.16+; without it the first tile instruction kills the process with SIGILL). In emulation
    (AMX_EMULATED): any x86-64 or 64-bit ARM CPU.
    """
    if AMX_EMULATED:
        return platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if not {"amx-tile", "amx-bf16"} <= features():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) != 0:
        return False
    llvmlite.binding.initialize_native_asmparser()     # Numba's JIT cannot assemble inline asm without it
    return True


INT8_DOT_PATHS = ("vnni", "avx2", "emulate")


def int8_dot_path():
    """Which instructions int8_dot.py's integer dot products use on this CPU.

    "vnni" (AVX512-VNNI with AVX512-VL: VPDPBUSD), else "avx2" (VPMADDUBSW + VPMADDWD), else
    "emulate" (the same arithmetic in plain Numba). MINIGPT2_INT8_DOT names one, so that the tests
    run every path on any CPU that has its instructions (and the emulation everywhere); asking for
    instructions this CPU lacks is a ValueError, not a crash. Read once per process, before the
    kernels compile.
    """
    have = {"vnni": {"avx512vnni", "avx512vl", "avx2"} <= features(), "avx2": "avx2" in features(), "emulate": True}
    override = os.environ.get("MINIGPT2_INT8_DOT")
    if override is not None:
        if override not in INT8_DOT_PATHS:
            raise ValueError(f"MINIGPT2_INT8_DOT must be one of {INT8_DOT_PATHS}, got {override!r}")
        if not have[override]:
            raise ValueError(f"MINIGPT2_INT8_DOT={override}: this CPU ({name()}) lacks the instructions; "
                             f"use 'emulate' or unset it")
        return override
    return next(path for path in INT8_DOT_PATHS if have[path])
