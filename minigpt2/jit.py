"""The building blocks of the Numba kernels (kernels.py, matvec.py, amx.py).

Compiling one kernel twice, threaded and serial; the LLVM intrinsics the kernels use (a bit cast
and a prefetch); and exp and GELU in float32 arithmetic that vectorises, since Numba has no SVML
here and would call libm's scalar functions.
"""

import math
import types

import llvmlite.ir
import numba
import numpy as np
from numba import njit
from numba.core import cgutils
from numba.extending import intrinsic

_REDUCE = {"reassoc", "contract"}   # the only fast-math flags used, and only on reductions
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _threaded_and_serial(fastmath=False):
    """Compile one kernel twice: threaded (prange splits the loop) and serial (prange is range).

    Small inputs (a decode step's layer norm, the attention of a short context) take the serial
    build: starting the threads costs more than they save there, and far more when other
    processes keep the cores busy (one descheduled thread holds the whole parallel region up).
    Returns the pair (threaded, serial), so `kernel[serial]` picks one with a bool.

    Both builds use error_model="numpy": a float division by zero gives inf/NaN instead of
    raising ZeroDivisionError. With Python's error model every division carries a branch to an
    exception, which stops LLVM from vectorising the loop around it (the GELU pass ran 10x slower
    serial than threaded on one thread until this was set; parallel loops already use numpy's).
    """
    def compile_both(function):
        serial = types.FunctionType(function.__code__, function.__globals__, function.__name__ + "_serial",
                                    function.__defaults__, function.__closure__)
        serial.__qualname__ = function.__qualname__ + "_serial"      # its own on-disk cache entry
        return (njit(parallel=True, fastmath=fastmath, error_model="numpy", cache=True)(function),
                njit(fastmath=fastmath, error_model="numpy", cache=True)(serial))
    return compile_both


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret a uint32's bits as a float32 (a free register move; NumPy's .view for scalars)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.FloatType())
    return numba.types.float32(numba.types.uint32), codegen


@intrinsic
def _float32_bits(typingctx, value):
    """A float32's bits as a uint32 (a free register move; the reverse of _bits_to_float32)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.IntType(32))
    return numba.types.uint32(numba.types.float32), codegen


@intrinsic
def _prefetch(typingctx, matrix, row, col):
    """Ask the CPU to start loading matrix[row, col] into cache; returns nothing, changes nothing.

    llvm.prefetch (x86 PREFETCHT0). The decode kernels stream each weight matrix once, from
    DRAM; the hardware prefetcher alone keeps too few cache lines in flight, so a thread's
    compute and its memory stalls add up instead of overlapping. Asking for the rows a few
    steps ahead raised a 250 MB matrix-vector product from 14.7 to 19.7 GB/s (bfloat16) and
    19.6 to 22.9 GB/s (float32, where NumPy's BLAS sgemv reaches 20) on 2 cores.
    """
    def codegen(context, builder, signature, args):
        matrix_type = signature.args[0]
        array = context.make_array(matrix_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, matrix_type, array, [args[1], args[2]],
                                           wraparound=False, boundscheck=False)
        byte_pointer = builder.bitcast(pointer, llvmlite.ir.IntType(8).as_pointer())
        int32 = llvmlite.ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, llvmlite.ir.FunctionType(llvmlite.ir.VoidType(), [byte_pointer.type, int32, int32, int32]),
            "llvm.prefetch.p0")
        # read (0), keep in all cache levels (3), data not instructions (1)
        builder.call(function, [byte_pointer, int32(0), int32(3), int32(1)])
        return context.get_dummy_value()
    return numba.types.void(matrix, numba.types.intp, numba.types.intp), codegen


# Rows ahead that the decode kernels prefetch (8 rows of GPT-2's 768-wide bfloat16 matrices is
# 12 KB; 4 to 64 rows measured within 5% of each other).
PREFETCH_ROWS = 8


@njit(inline="always")
def _prefetch_row(matrix, row):
    # start loading matrix[row, :], one request per 64-byte cache line; nothing past the end
    if row < matrix.shape[0]:
        step = max(1, 64 // matrix.itemsize)
        for col in range(0, matrix.shape[1], step):
            _prefetch(matrix, row, col)


@njit(inline="always")
def _exp(x):
    """exp(x) for float32 x, to about 1 ulp, in arithmetic that vectorises (no libm call).

    Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a degree-7 polynomial for exp(r) (the
    Cephes expf coefficients) and 2**n built from its exponent bits. Below -87.3 (where float32
    results turn subnormal) it returns 0, above 88.7 inf, NaN stays NaN; every branch is a
    select, so the loop still vectorises.
    """
    clamped = min(max(x, np.float32(-87.3)), np.float32(88.7))
    n = np.floor(clamped * np.float32(1.44269504088896341) + np.float32(0.5))
    r = clamped - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    value = p * _bits_to_float32(np.uint32(np.int32(n) + np.int32(127)) << np.uint32(23))
    if x < np.float32(-87.3):
        return np.float32(0.0)
    if x > np.float32(88.7):
        return np.float32(np.inf)
    return value if x == x else x


# GELU (tanh form, "gelu_new"): 0.5 * x * (1 + tanh(u)) == x / (1 + exp(-2u)) exactly
# (tanh(u) = 2 sigmoid(2u) - 1); the exp form is used because Numba calls libm's scalar tanhf
# here (no SVML), while _exp vectorises.


@njit(inline="always")
def _gelu_scalar(v):
    u2 = np.float32(2.0 * _SQRT_2_OVER_PI) * (v + np.float32(0.044715) * v * v * v)
    return v / (np.float32(1.0) + _exp(-u2))
