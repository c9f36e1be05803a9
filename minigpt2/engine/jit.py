"""The building blocks of the engine's Numba kernels, shared by every op file.

Compiling one kernel twice, threaded and serial; the LLVM intrinsics the kernels use (a bit cast
and a prefetch); exp and GELU in float32 arithmetic that vectorises, since Numba has no SVML
here and would call libm's scalar functions; a running max that vectorises; and the small
array helpers every op needs at its boundary (rows of float32, cached vectors of ones and zeros).
"""

import math
import types

import llvmlite.ir
import numba
import numpy as np
from numba import njit, prange
from numba.core import cgutils
from numba.extending import intrinsic

REDUCE = {"reassoc", "contract"}   # the only fast-math flags used, and only on reductions
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def threaded_and_serial(fastmath=False):
    """Compile one kernel twice: threaded (prange splits the loop) and serial (prange is range).

    Small inputs (a decode step's layer norm, the attention of a short context) take the serial
    build: starting the threads costs more than they save there, and far more when other
    processes keep the cores busy (one descheduled thread holds the whole parallel region up).
    Returns the pair (threaded, serial), so `kernel[serial]` picks one with a bool.

    Both builds use error_model="numpy": a float division by zero gives inf/NaN instead of
    raising ZeroDivisionError. With Python's error model every division carries a branch to an
    exception, which stops LLVM from vectorising the loop around it (parallel loops already use
    numpy's error model, so without this the serial build alone would be slow).
    """
    def compile_both(function):
        serial = types.FunctionType(function.__code__, function.__globals__, function.__name__ + "_serial",
                                    function.__defaults__, function.__closure__)
        serial.__qualname__ = function.__qualname__ + "_serial"      # its own on-disk cache entry
        return (njit(parallel=True, fastmath=fastmath, error_model="numpy", cache=True)(function),
                njit(fastmath=fastmath, error_model="numpy", cache=True)(serial))
    return compile_both


@intrinsic
def bits_to_float32(typingctx, bits):
    """Reinterpret a uint32's bits as a float32 (a free register move; NumPy's .view for scalars)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.FloatType())
    return numba.types.float32(numba.types.uint32), codegen


@intrinsic
def float32_bits(typingctx, value):
    """A float32's bits as a uint32 (a free register move; the reverse of bits_to_float32)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.IntType(32))
    return numba.types.uint32(numba.types.float32), codegen


def prefetch_with_locality(locality):
    """A prefetch intrinsic with LLVM's `locality` hint (3: x86 PREFETCHT0, into L1; 2: T1; 1: T2,
    into L2; 0: NTA). The kernels use `prefetch` below; benchmarks/bench_decode_streaming.py
    compares the others."""
    @intrinsic
    def prefetch_hinted(typingctx, matrix, row, col):
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
            # read (0), the locality hint, data not instructions (1)
            builder.call(function, [byte_pointer, int32(0), int32(locality), int32(1)])
            return context.get_dummy_value()
        return numba.types.void(matrix, numba.types.intp, numba.types.intp), codegen
    return prefetch_hinted


# Ask the CPU to start loading matrix[row, col] into its L2 cache; returns nothing, changes nothing.
# Locality 1 (x86 PREFETCHT2). The decode kernels stream each weight matrix once, from DRAM; the
# hardware prefetcher alone keeps too few cache lines in flight, so asking for the rows ahead lets
# a thread's compute overlap its memory stalls. Into L2, not L1: a PREFETCHT0 holds one of L1's
# few miss buffers until the line arrives, and with rows 8 ahead it cost more than it gave (a 124M
# bfloat16 step of matrix-vector products on Zen 4: 13.3 ms with PREFETCHT0, 10.8 ms with no
# prefetch, 8.4 ms with PREFETCHT2; BENCHMARKS.md).
prefetch = prefetch_with_locality(1)


# How far ahead of the rows being multiplied the decode kernels prefetch, in bytes: 24 KB (16 rows
# of GPT-2's 768-wide bfloat16 matrices) covers a DRAM access and stays well inside L2. Measured
# best among 8-128 rows ahead; much further ahead the lines start to leave L2 before they are read.
PREFETCH_BYTES = 24 * 1024


@njit(inline="always")
def prefetch_distance(matrix):
    # rows of `matrix` in PREFETCH_BYTES, at least 4 (one register tile)
    return max(4, PREFETCH_BYTES // (matrix.shape[1] * matrix.itemsize))


@njit(inline="always")
def prefetch_row(matrix, row):
    # start loading matrix[row, :], one request per 64-byte cache line; nothing past the end
    if row < matrix.shape[0]:
        step = max(1, 64 // matrix.itemsize)
        for col in range(0, matrix.shape[1], step):
            prefetch(matrix, row, col)


@njit(inline="always")
def exp(x):
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
    value = p * bits_to_float32(np.uint32(np.int32(n) + np.int32(127)) << np.uint32(23))
    if x < np.float32(-87.3):
        return np.float32(0.0)
    if x > np.float32(88.7):
        return np.float32(np.inf)
    return value if x == x else x


# GELU (tanh form, "gelu_new"): 0.5 * x * (1 + tanh(u)) == x / (1 + exp(-2u)) exactly
# (tanh(u) = 2 sigmoid(2u) - 1); the exp form is used because Numba calls libm's scalar tanhf
# here (no SVML), while exp vectorises.


@njit(inline="always")
def gelu_scalar(v):
    u2 = np.float32(2.0 * SQRT_2_OVER_PI) * (v + np.float32(0.044715) * v * v * v)
    return v / (np.float32(1.0) + exp(-u2))


@threaded_and_serial()
def gelu_inplace(x):
    # x [n] -> x [n], in place
    for i in prange(x.shape[0]):
        x[i] = gelu_scalar(x[i])


@njit(inline="always")
def row_max(x, n, lanes):
    # max of x[:n], -inf if n == 0 or all -inf; lanes: a float32 scratch of 16. A running max is
    # one long dependency chain (and LLVM will not vectorise a float max without no-NaN
    # fast-math); sixteen independent running maxima let the CPU overlap them.
    lanes[:] = -np.inf
    n16 = n - n % 16
    for j in range(0, n16, 16):
        for k in range(16):
            lanes[k] = x[j + k] if x[j + k] > lanes[k] else lanes[k]
    maxval = np.float32(-np.inf)
    for k in range(16):
        maxval = lanes[k] if lanes[k] > maxval else maxval
    for j in range(n16, n):
        maxval = x[j] if x[j] > maxval else maxval
    return maxval


@njit(cache=True)
def visible_extent(mask):
    # mask [b, t, s] -> [b, t]: 1 + the index of the last key each query row may see (0: none)
    b, t, s = mask.shape
    extent = np.zeros((b, t), dtype=np.int64)
    for bi in range(b):
        for ti in range(t):
            for j in range(s - 1, -1, -1):
                if mask[bi, ti, j]:
                    extent[bi, ti] = j + 1
                    break
    return extent


# ---- array helpers at an op's boundary ---------------------------------------------------------

_ONES, _ZEROS = {}, {}


def ones(n):
    """A cached float32 vector of n ones (the scale of unscaled weights; no head mask). Only
    kernels read it (a read-only flag would make Numba compile every kernel once more)."""
    if n not in _ONES:
        _ONES[n] = np.ones(n, dtype=np.float32)
    return _ONES[n]


def zeros(n):
    """A cached float32 vector of n zeros (the missing bias of the LM head); only kernels read it."""
    if n not in _ZEROS:
        _ZEROS[n] = np.zeros(n, dtype=np.float32)
    return _ZEROS[n]


def as_rows(x, name):
    """x [..., n] -> a C-contiguous float32 [rows, n] view or copy, and the leading shape."""
    # a decode step calls this dozens of times: the common case (a float32 array) is checked first
    if type(x) is not np.ndarray or x.dtype != np.float32:
        x = np.asarray(x, dtype=np.float32)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got shape {x.shape}")
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.flags.c_contiguous:
        x2 = np.ascontiguousarray(x2)
    return x2, x.shape[:-1]


def as_vector(v, n, name):
    """A float32 contiguous vector of length n (None -> zeros)."""
    if v is None:
        return zeros(n)
    if type(v) is not np.ndarray or v.dtype != np.float32 or not v.flags.c_contiguous:
        v = np.ascontiguousarray(v, dtype=np.float32)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {v.shape}")
    return v
