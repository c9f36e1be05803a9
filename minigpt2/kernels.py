"""The forward-pass ops as Numba kernels: the same functions as ``ops.py``, made fast.

``model.py`` calls ``layer_norm``, ``linear``, ``gelu_new`` and ``attention`` from this module
when ``backend="numba"`` (the default) and from ``ops.py`` when ``backend="numpy"``; the two
modules have the same names and signatures and compute the same function (the tests in
``tests/test_ops_vs_kernels.py`` hold them to each other). Read ``ops.py`` first: it says *what*
is computed; this file says how to compute it quickly on a CPU.

Where the time goes, and what each kernel does about it (measurements in BENCHMARKS.md):

* Decode (one new token per step) is memory-bound: every weight matrix is read once per token,
  so ``linear`` on a few rows is a matrix-vector product that must stream the weights at full
  memory bandwidth. For float32 weights that is BLAS's sgemv (it measured faster in a whole
  decode step, see FLOAT32_MATVEC); for packed bfloat16/float16/int8 weights (``quantize.py``)
  it is ``_matvec_out_in``, which widens each value to float32 in registers. Batched decode
  (2-8 rows of float32) has one Numba kernel per weight layout: ``_matvec_in_out`` for the
  checkpoint's ``[n_in, n_out]`` layout (each thread streams a contiguous band of rows and keeps
  partial sums for every output) and the same ``_matvec_out_in`` for an ``[n_out, n_in]`` layout
  such as the tied LM head ``wte.T`` (dot products over weight rows, in tiles of four outputs by
  four rows of x). The kernels that read one row per output prefetch the rows ahead
  (``_prefetch``): the hardware prefetcher alone leaves bandwidth unused there.
* Prefill (many tokens) is compute-bound: the matmuls go to BLAS (``np.matmul``, outside Numba,
  which has no BLAS without SciPy), and a Numba pass adds the bias (and GELU) in place.
* Attention: in a prefill, BLAS computes q.k and probs.v in blocks of query rows that stop at
  the last key a block may see (so most of the causal upper triangle is skipped), with a Numba
  masked softmax in between; in a decode step, one kernel runs numbered passes per query row
  (llm.c style) over the visible keys only, so a padded key never touches a real row.
* Elementwise work (bias, GELU, layer norm) is one pass over rows, serial next to BLAS (see
  BESIDE_BLAS_SERIAL).

Every kernel has a naive twin (``*_naive``): plain loops, no threads, no fast-math, written to
be obviously right. The tests compare the fast kernels with both the twins and ``ops.py``.

Numerics: float32 storage, float32 arithmetic, except that layer norm statistics accumulate in
float64. Only reduction kernels get ``fastmath={"reassoc", "contract"}`` (needed to vectorise a
float sum; it reorders additions as BLAS does). The blanket ``fastmath=True`` is never used: it
also assumes no NaN/inf, which would break the masked-row handling.

Threads: Numba kernels and OpenBLAS run one after the other, never at the same time, but both
keep their idle threads spinning for a while; ``set_num_threads(n)`` sets both pools to ``n``
explicitly (no environment variables are read here).
"""

import ctypes
import glob
import math
import os
import platform
import time
import types

import llvmlite.binding
import llvmlite.ir
import numba
import numpy as np
from numba import njit, prange
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .quantize import PackedWeight

# linear() on at most this many rows (a decode step) of float32 weights: Numba matrix-vector
# kernels (or BLAS sgemv for one row, see FLOAT32_MATVEC); more rows: BLAS sgemm. Alone, BLAS
# beat the Numba kernel at 8 rows (32.5 vs 40.0 ms on the 226 MB of MLP matrices), but whole
# decode steps of a batch of 8 were not faster with it: 126 vs 131 tok/s (Numba), alternated
# three times in one process (and 63 vs 92 while the decode attention still ran threaded).
MATVEC_MAX_ROWS = 8
# Packed (bfloat16/float16/int8) weights on at most this many rows go through the Numba kernel;
# more rows (a prefill) dequantize the matrix and call BLAS. On a 768x3072 matrix the kernel
# took 0.78 ms for 16 rows against 2.8 for dequantize + BLAS, and they met at 32 rows
# (2.6 vs 2.9 ms; 64 rows: 3.4 vs 3.7 for bfloat16, 4.9 vs 3.8 for int8). With the old limit
# of 8, a batch of 16 sequences dequantized every matrix at every decode step and decoded more
# slowly than one sequence.
PACKED_MATVEC_MAX_ROWS = 32
# Float32 weights, one row (batch-1 decode): "blas" (sgemv, then the Numba bias/GELU pass) or
# "numba" (the _matvec_in_out / _matvec_out_in kernels). BLAS is the default because a whole
# decode step measured faster with it (BENCHMARKS.md). For 2..MATVEC_MAX_ROWS rows (batched
# decode) the Numba kernels are used: BLAS's sgemm on a few rows packs (copies) the whole weight
# matrix on every call and was slower at batch 2 than at batch 1.
FLOAT32_MATVEC = "blas"

_REDUCE = {"reassoc", "contract"}   # the only fast-math flags used, and only on reductions
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# Inputs with fewer elements than this run the serial build of a kernel (see _threaded_and_serial).
SERIAL_MAX_ELEMENTS = 1 << 16
# The passes that run between BLAS calls (layer norm, bias + GELU after a matmul, the masked
# softmax between the two attention matmuls, and the decode attention kernel, which a float32
# decode step runs between BLAS sgemv calls) always take the serial build. Numba's OpenMP
# workers spin for a while after each parallel region and OpenBLAS's for a while after each
# call, and on 2 cores the two pools stall each other: a 128-token prefill ran 2.6x slower
# (180 vs 470 tok/s), and float32 decoding at a 600-token context 3-4x slower (9 vs 30-36
# tok/s) with the threaded attention kernel (GPT-2 124M, back to back; BENCHMARKS.md). The
# packed-weight matrix-vector kernels, which run without BLAS, stay threaded.
BESIDE_BLAS_SERIAL = True
# The decode attention kernel is "beside BLAS" only if BLAS ran lately: OpenBLAS's workers spin
# for about 2**28 cycles (~0.1 s here) after a call. A decode step of packed weights calls no
# BLAS at all (its LM head is packed too), so there the kernel runs threaded once that long has
# passed since the prompt's matmuls; a float32 step calls sgemv every layer and stays serial.
BLAS_SPIN_SECONDS = 0.25
_last_blas_call = 0.0


def _note_blas_call():
    """Remember when BLAS last ran (see BLAS_SPIN_SECONDS)."""
    global _last_blas_call
    _last_blas_call = time.perf_counter()


def _blas_matmul(a, b, out):
    """np.matmul(a, b, out=out), noting the time for BLAS_SPIN_SECONDS."""
    np.matmul(a, b, out=out)
    _note_blas_call()
    return out


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


# --------------------------------------------------------------------------------------------
# threads


def _openblas_set_num_threads():
    """The `set_num_threads` function of the OpenBLAS that NumPy loaded, or None if not found.

    The library is found among the files this process has mapped (NumPy's wheels bundle it as
    numpy.libs/libscipy_openblas*.so; a system NumPy links libopenblas.so).
    """
    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if "openblas" in os.path.basename(path).lower() and ".so" in path:
                    paths.add(path)
    except OSError:
        pass
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    paths.update(glob.glob(os.path.join(libs_dir, "*openblas*")))
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads"):
            function = getattr(lib, symbol, None)
            if function is not None:
                function.argtypes = [ctypes.c_int]
                return function
    return None


def set_num_threads(num_threads):
    """Use `num_threads` threads in the Numba kernels and in NumPy's BLAS.

    Returns True when the BLAS thread count could be set too (NumPy's bundled OpenBLAS), False
    when only Numba's could. `num_threads` must be between 1 and the number Numba started with.
    """
    if not 1 <= int(num_threads) <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"num_threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, "
                         f"got {num_threads}")
    numba.set_num_threads(int(num_threads))
    blas_set = _openblas_set_num_threads()
    if blas_set is None:
        return False
    blas_set(int(num_threads))
    return True


_PRECISIONS = ("highest", "high", "medium")
_float32_matmul_precision = "highest"


def set_float32_matmul_precision(precision):
    """How prefill matmuls may compute, as torch.set_float32_matmul_precision.

    "highest" (the default) and "high": float32 products and sums, everywhere. "medium": on a
    CPU with AMX (``amx.available()``: Intel Xeon from Sapphire Rapids on, under Linux), the
    matmuls of more than PACKED_MATVEC_MAX_ROWS rows (a prefill, not a decode step) round both
    operands to bfloat16 and sum in float32 on AMX tiles (``amx.py``), several times faster than
    float32 BLAS; without AMX it changes nothing, as torch's setting changes nothing without a
    fast kernel. Attention, layer norm and decoding stay float32. Only the numba backend reads
    this; the numpy backend always computes in float32.
    """
    global _float32_matmul_precision
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    _float32_matmul_precision = precision


def get_float32_matmul_precision():
    """The precision set by set_float32_matmul_precision ("highest" unless changed)."""
    return _float32_matmul_precision


# With matmul precision "medium", a packed bfloat16 weight (nothing to convert per call) takes the
# AMX kernel from this many rows (a batched decode step) on. Whole decode steps of GPT-2 124M in
# bfloat16, "highest" and "medium" alternated three times in one process (median step, tok/s):
# 16 rows 216-318 vs 296-573; 8 rows 178-260 vs 152-312, no clear winner, so 8 stays float32.
AMX_STORED_MIN_ROWS = 16


def _bfloat16_tiles_allowed(m, weight=None):
    """Whether linear() on m rows of `weight` (attention: weight None) takes the AMX path
    (amx.py): matmul precision "medium" on a CPU with AMX, and a prefill (more than
    PACKED_MATVEC_MAX_ROWS rows) or a batch of AMX_STORED_MIN_ROWS+ rows over a weight used as
    stored. One-row decode steps stay float32: they are bound by memory, not arithmetic."""
    if _float32_matmul_precision != "medium" or m < AMX_STORED_MIN_ROWS:
        return False
    from . import amx                              # noqa: PLC0415 (amx imports this module)
    if m <= PACKED_MATVEC_MAX_ROWS and not (weight is not None and amx.uses_weight_as_stored(weight)):
        return False
    return amx.available()


# --------------------------------------------------------------------------------------------
# helpers


def _rows(x, name):
    """x [..., n] -> a C-contiguous float32 [rows, n] view or copy, and the leading shape."""
    # a decode step calls this about 75 times: the common case (a float32 array) is checked first
    if type(x) is not np.ndarray or x.dtype != np.float32:
        x = np.asarray(x, dtype=np.float32)
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension, got shape {x.shape}")
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.flags.c_contiguous:
        x2 = np.ascontiguousarray(x2)
    return x2, x.shape[:-1]


def _vector(v, n, name):
    """A float32 contiguous vector of length n (None -> zeros)."""
    if v is None:
        return _zeros(n)
    if type(v) is not np.ndarray or v.dtype != np.float32 or not v.flags.c_contiguous:
        v = np.ascontiguousarray(v, dtype=np.float32)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {v.shape}")
    return v


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret a uint32's bits as a float32 (a free register move; NumPy's .view for scalars)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.FloatType())
    return numba.types.float32(numba.types.uint32), codegen


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


# --------------------------------------------------------------------------------------------
# layer norm


@_threaded_and_serial(fastmath=_REDUCE)
def _layer_norm_rows(x, weight, bias, eps, out):
    # x [n, C] -> out [n, C]; statistics in float64, two passes (mean, then centred variance)
    n, C = x.shape
    for r in prange(n):
        row = x[r]
        total = 0.0
        for c in range(C):
            total += row[c]
        mean = total / C
        sq = 0.0
        for c in range(C):
            dev = row[c] - mean
            sq += dev * dev
        rstd = 1.0 / math.sqrt(sq / C + eps)      # biased variance, eps inside the sqrt
        mean32 = np.float32(mean)
        rstd32 = np.float32(rstd)
        for c in range(C):
            out[r, c] = (row[c] - mean32) * rstd32 * weight[c] + bias[c]


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis: x [..., C], weight [C], bias [C] -> [..., C] float32."""
    x2, lead = _rows(x, "x")
    C = x2.shape[1]
    out = np.empty_like(x2)
    kernel = _layer_norm_rows[BESIDE_BLAS_SERIAL or x2.size <= SERIAL_MAX_ELEMENTS]
    kernel(x2, _vector(weight, C, "weight"), _vector(bias, C, "bias"), float(eps), out)
    return out.reshape(*lead, C)


@njit(cache=True)
def layer_norm_naive(x, weight, bias, eps):
    """Twin of layer_norm for tests: x [n, C] float32 -> [n, C], textbook loops."""
    n, C = x.shape
    out = np.empty((n, C), dtype=np.float32)
    for r in range(n):
        mean = 0.0
        for c in range(C):
            mean += x[r, c]
        mean /= C
        var = 0.0
        for c in range(C):
            var += (x[r, c] - mean) ** 2
        var /= C
        for c in range(C):
            out[r, c] = (x[r, c] - mean) / math.sqrt(var + eps) * weight[c] + bias[c]
    return out


# --------------------------------------------------------------------------------------------
# GELU (tanh form, "gelu_new")
#
# 0.5 * x * (1 + tanh(u)) == x / (1 + exp(-2u)) exactly (tanh(u) = 2 sigmoid(2u) - 1); the exp
# form is used because Numba calls libm's scalar tanhf here (no SVML), while _exp vectorises.


@njit(inline="always")
def _gelu_scalar(v):
    u2 = np.float32(2.0 * _SQRT_2_OVER_PI) * (v + np.float32(0.044715) * v * v * v)
    return v / (np.float32(1.0) + _exp(-u2))


@_threaded_and_serial()
def _gelu_inplace(x):
    # x [n] -> x [n], in place
    for i in prange(x.shape[0]):
        x[i] = _gelu_scalar(x[i])


def gelu_new(x):
    """GELU, tanh approximation (OpenAI GPT-2 / HF "gelu_new"): any shape -> same shape float32."""
    x = np.asarray(x)
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    _gelu_inplace[out.size <= SERIAL_MAX_ELEMENTS](out.reshape(-1))
    return out


@njit(cache=True)
def gelu_new_naive(x):
    """Twin of gelu_new for tests: x [n] float32 -> [n], the textbook tanh formula in float64."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        out[i] = 0.5 * v * (1.0 + math.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v ** 3)))
    return out


# --------------------------------------------------------------------------------------------
# linear: x @ weight + bias (HF Conv1D layout, weight [n_in, n_out])


@_threaded_and_serial()
def _bias_act_inplace(out, bias, apply_gelu):
    # out [m, n_out] += bias [n_out], then optionally GELU, in one pass
    m, n_out = out.shape
    for r in prange(m):
        row = out[r]
        if apply_gelu:
            for o in range(n_out):
                row[o] = _gelu_scalar(row[o] + bias[o])
        else:
            for o in range(n_out):
                row[o] += bias[o]


@_threaded_and_serial()
def _matvec_in_out(x, weight, bias, apply_gelu, n_chunks, out):
    # x [m, n_in] @ weight [n_in, n_out] + bias -> out [m, n_out], for small m (decode).
    # The weights are read once, in memory order: chunk k of the threads streams the contiguous
    # rows [i0, i1) of `weight` and accumulates x[:, i] * weight[i, :] into its own partial sums
    # (m * n_out floats, L1/L2 resident). The inner loop is an axpy, which vectorises without
    # reassociation. The partials are then summed in chunk order (deterministic).
    # n_chunks = the number of threads (numba.get_num_threads() inside a kernel stops caching).
    m, n_in = x.shape
    n_out = weight.shape[1]
    n_chunks = max(1, min(n_chunks, n_in))
    rows_per_chunk = (n_in + n_chunks - 1) // n_chunks
    partial = np.zeros((n_chunks, m, n_out), dtype=np.float32)
    for k in prange(n_chunks):
        i0 = k * rows_per_chunk
        i1 = min(n_in, i0 + rows_per_chunk)
        acc = partial[k]
        for i in range(i0, i1):
            w_row = weight[i]
            for r in range(m):
                xi = x[r, i]
                acc_row = acc[r]
                for o in range(n_out):
                    acc_row[o] += xi * w_row[o]
    for r in range(m):
        for o in range(n_out):
            total = bias[o]
            for k in range(n_chunks):
                total += partial[k, r, o]
            out[r, o] = _gelu_scalar(total) if apply_gelu else total


# ---- weights stored [n_out, n_in]: packed (bfloat16 / float16 / int8, see quantize.py) or
# float32 (the tied LM head, wte.T). The decode kernel reads the stored values and widens each
# to float32 in registers, so for packed weights memory traffic shrinks to 2 or 1 bytes per
# weight while the sums stay float32.


@njit(inline="always")
def _bfloat16_to_float32(raw):
    # raw: uint16 bits; bfloat16 is the upper half of a float32
    return _bits_to_float32(np.uint32(raw) << np.uint32(16))


@intrinsic
def _half_bits_to_float32(typingctx, bits):
    """float16 bits (int16) -> float32 through LLVM's half type: one vcvtph2ps on x86 with F16C."""
    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], llvmlite.ir.HalfType())
        return builder.fpext(half, llvmlite.ir.FloatType())
    return numba.types.float32(numba.types.int16), codegen


def _has_hardware_half():
    # x86 CPUs with F16C (2012 on) and 64-bit ARM widen half to float in one instruction, which
    # LLVM emits for fpext half. Elsewhere LLVM would call a runtime helper that Numba's JIT may
    # not link, so the arithmetic _float16_to_float32 below is used instead.
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    try:
        return bool(llvmlite.binding.get_host_cpu_features().get("f16c", False))
    except RuntimeError:
        return False


# benchmarks/bench_widening.py (a cache-resident 768x768 matrix, one core, one row): 38 us with
# the instruction against 132 us with the arithmetic conversion, which had left float16 weights
# decoding no faster than float32.
_HARDWARE_HALF = _has_hardware_half()


@njit(inline="always")
def _float16_to_float32(raw):
    # raw: uint16 IEEE half bits. Branch-free (selects), so the loop still vectorises.
    magnitude = np.uint32(raw) & np.uint32(0x7FFF)
    normal = _bits_to_float32((magnitude << np.uint32(13)) + np.uint32(0x38000000))     # exp + 112
    special = _bits_to_float32((magnitude << np.uint32(13)) | np.uint32(0x7F800000))    # inf, nan
    tiny = np.float32(magnitude) * np.float32(5.9604644775390625e-08)                   # 2**-24
    value = special if magnitude >= 0x7C00 else (normal if magnitude >= 0x0400 else tiny)
    return -value if (np.uint32(raw) & np.uint32(0x8000)) else value


def _widen(raw):
    """One stored weight (packed or float32) -> float32; chosen at compile time by its type."""
    raise NotImplementedError("_widen is only callable from Numba-compiled code")


@overload(_widen)
def _widen_by_type(raw):
    # The packed arrays reach the kernel as uint16 (bfloat16 bits), int16 (float16 bits, a view)
    # or int8, so the element type alone selects the conversion, when the kernel is compiled:
    # no branch per value, and no function argument (which costs Numba about 5 us of type
    # lookup per call, 49 calls per decoded token).
    if raw == numba.types.uint16:
        return lambda raw: _bfloat16_to_float32(raw)
    if raw == numba.types.int16 and _HARDWARE_HALF:
        return lambda raw: _half_bits_to_float32(raw)
    if raw == numba.types.int16:
        return lambda raw: _float16_to_float32(np.uint16(raw))
    if raw == numba.types.int8:
        return lambda raw: np.float32(raw)            # int8: the per-row scale is applied to the sum
    if raw == numba.types.float32:
        return lambda raw: raw                        # float32 rows (the transposed LM head)
    return None


# Inputs per step of _dot_rows4_int8: one 512-bit vector of float32.
DOT_LANES = 16


def _emit_int8_dot_loop(context, builder, x_addresses, weight_addresses, n):
    """LLVM IR for sums[a][b] = x_a[:n] . float(weights_b[:n]), the x rows float32 and the weight
    rows int8 at the given addresses (int64), n a multiple of DOT_LANES; returns the sums, row by
    row, as float32 values. One <16 x float> running sum per pair, reduced at the end."""
    ir = llvmlite.ir
    float_type, int64 = ir.FloatType(), ir.IntType(64)
    vector = ir.VectorType(float_type, DOT_LANES)
    bytes_type = ir.VectorType(ir.IntType(8), DOT_LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fma.v16f32")
    start = builder.block
    loop = builder.append_basic_block("int8_dot.loop")
    done = builder.append_basic_block("int8_dot.done")
    zero = ir.Constant(vector, [0.0] * DOT_LANES)
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(int64, 0)), loop, done)
    builder.position_at_end(loop)                          # for i in range(0, n, 16):
    i = builder.phi(int64)
    sums = [[builder.phi(vector) for _ in weight_addresses] for _ in x_addresses]
    x_vectors = [builder.load(builder.inttoptr(builder.add(address, builder.mul(i, ir.Constant(int64, 4))),
                                               vector.as_pointer()), align=4) for address in x_addresses]
    weight_vectors = [builder.sitofp(builder.load(builder.inttoptr(builder.add(address, i), bytes_type.as_pointer()),
                                                  align=1), vector) for address in weight_addresses]
    updated = [[builder.call(fma, [x_vector, weights, running])    # sums[a][b] += x_a[i:i+16] * w_b[i:i+16]
                for weights, running in zip(weight_vectors, row)] for x_vector, row in zip(x_vectors, sums)]
    i_next = builder.add(i, ir.Constant(int64, DOT_LANES))
    i.add_incoming(ir.Constant(int64, 0), start)
    i.add_incoming(i_next, loop)
    for row, new_row in zip(sums, updated):
        for running, new in zip(row, new_row):
            running.add_incoming(zero, start)
            running.add_incoming(new, loop)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
    builder.position_at_end(done)
    finals = []
    for new_row in updated:                                # (phi nodes first in a block, then the sums)
        for new in new_row:
            final = builder.phi(vector)
            final.add_incoming(zero, start)
            final.add_incoming(new, loop)
            finals.append(final)
    add_up = cgutils.get_or_insert_function(builder.module, ir.FunctionType(float_type, [float_type, vector]),
                                            "llvm.vector.reduce.fadd.v16f32")
    return [builder.call(add_up, [ir.Constant(float_type, 0.0), final], fastmath=("reassoc",)) for final in finals]


def _row_addresses(context, builder, array_type, array_value, first_row, count):
    """The int64 addresses of rows first_row .. first_row + count of a 2D (or 1D: count 1) array."""
    int64 = llvmlite.ir.IntType(64)
    array = context.make_array(array_type)(context, builder, array_value)
    base = builder.ptrtoint(array.data, int64)
    if array_type.ndim == 1:
        return [base]
    row_bytes = builder.extract_value(array.strides, 0)
    return [builder.add(base, builder.mul(row_bytes, builder.add(first_row, llvmlite.ir.Constant(int64, k))))
            for k in range(count)]


@intrinsic
def _dot_rows4_int8(typingctx, x, data, first_row, n):
    """_dot_rows4 for int8 rows: an LLVM loop over explicit 16-wide vectors.

    Numba's own loops are vectorised 8 wide on this CPU (LLVM prefers 256-bit vectors on Intel's
    AVX-512 cores), and a one-row decode step over int8 weights is bound by the widening
    arithmetic more than by memory. With 16-wide vectors, one int8 matrix-vector product over
    100 MB went from 16.7 to 19.3 GB/s, and whole int8 decode steps of GPT-2 124M were faster in
    every alternation (BENCHMARKS.md). The same loop for bfloat16 was slower in 5 of 7 and
    mixed for float16, so those keep Numba's loop.
    """
    def codegen(context, builder, signature, args):
        x_value, data_value, first_row_, n_ = args
        zero = llvmlite.ir.Constant(llvmlite.ir.IntType(64), 0)
        totals = _emit_int8_dot_loop(context, builder,
                                     _row_addresses(context, builder, signature.args[0], x_value, zero, 1),
                                     _row_addresses(context, builder, signature.args[1], data_value, first_row_, 4), n_)
        return context.make_tuple(builder, signature.return_type, totals)

    return numba.types.UniTuple(numba.types.float32, 4)(x, data, numba.types.intp, numba.types.intp), codegen


@intrinsic
def _dot_tile4x4_int8(typingctx, x, first_x_row, data, first_row, n):
    """Sums x[first_x_row + a, :n] . data[first_row + b, :n] for a, b = 0..3 (int8 rows), as a
    16-tuple s<a><b>: the batched decode kernel's 4 x 4 register tile in 16-wide vectors."""
    def codegen(context, builder, signature, args):
        x_value, first_x_row_, data_value, first_row_, n_ = args
        totals = _emit_int8_dot_loop(context, builder,
                                     _row_addresses(context, builder, signature.args[0], x_value, first_x_row_, 4),
                                     _row_addresses(context, builder, signature.args[2], data_value, first_row_, 4), n_)
        return context.make_tuple(builder, signature.return_type, totals)

    intp = numba.types.intp
    return numba.types.UniTuple(numba.types.float32, 16)(x, intp, data, intp, intp), codegen


@njit(inline="always")
def _rows4_loop(x, data, first_row, start, stop):
    # sums x[start:stop] . widen(data[first_row + k, start:stop]), k = 0..3, in Numba's loop
    s0 = s1 = s2 = s3 = np.float32(0.0)
    w0, w1, w2, w3 = data[first_row], data[first_row + 1], data[first_row + 2], data[first_row + 3]
    for i in range(start, stop):
        v = x[i]
        s0 += v * _widen(w0[i]); s1 += v * _widen(w1[i]); s2 += v * _widen(w2[i]); s3 += v * _widen(w3[i])  # noqa: E702
    return s0, s1, s2, s3


@njit(inline="always")
def _tile4x4_loop(x, first_x_row, data, first_row, start, stop):
    # sums x[first_x_row + a, start:stop] . widen(data[first_row + b, start:stop]), a, b = 0..3
    x0, x1, x2, x3 = x[first_x_row], x[first_x_row + 1], x[first_x_row + 2], x[first_x_row + 3]
    w0, w1, w2, w3 = data[first_row], data[first_row + 1], data[first_row + 2], data[first_row + 3]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)                   # s<row><output>
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
    for i in range(start, stop):
        a, b, c, d = _widen(w0[i]), _widen(w1[i]), _widen(w2[i]), _widen(w3[i])
        v0, v1, v2, v3 = x0[i], x1[i], x2[i], x3[i]
        s00 += v0 * a; s01 += v0 * b; s02 += v0 * c; s03 += v0 * d    # noqa: E702
        s10 += v1 * a; s11 += v1 * b; s12 += v1 * c; s13 += v1 * d    # noqa: E702
        s20 += v2 * a; s21 += v2 * b; s22 += v2 * c; s23 += v2 * d    # noqa: E702
        s30 += v3 * a; s31 += v3 * b; s32 += v3 * c; s33 += v3 * d    # noqa: E702
    return s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33


def _vector_loop_applies(x, data):
    # the 16-wide int8 loops read C-contiguous rows of float32 x and int8 weights
    return (x.layout == "C" and data.layout == "C" and x.dtype == numba.types.float32
            and data.dtype == numba.types.int8)


def _dot_rows4(x, data, first_row, n):
    """Sums x[:n] . widen(data[first_row + k, :n]) for k = 0..3, as a 4-tuple of float32."""
    raise NotImplementedError("_dot_rows4 is only callable from Numba-compiled code")


@overload(_dot_rows4, inline="always")
def _dot_rows4_by_type(x, data, first_row, n):
    # int8: the 16-wide vector loop over the first n - n % 16 inputs, Numba's loop for the rest;
    # other types: Numba's loop. Inlined into the caller, so the loops get its fast-math flags
    # (which let them vectorise; compiled apart, bfloat16 decode steps fell by 10-15%).
    if not _vector_loop_applies(x, data):
        return lambda x, data, first_row, n: _rows4_loop(x, data, first_row, 0, n)

    def vectors_then_rest(x, data, first_row, n):
        wide = n - n % DOT_LANES
        a0, a1, a2, a3 = _dot_rows4_int8(x, data, first_row, wide)
        b0, b1, b2, b3 = _rows4_loop(x, data, first_row, wide, n)
        return a0 + b0, a1 + b1, a2 + b2, a3 + b3
    return vectors_then_rest


def _dot_tile4x4(x, first_x_row, data, first_row, n):
    """Sums x[first_x_row + a, :n] . widen(data[first_row + b, :n]), a, b = 0..3, as the 16-tuple
    s00, s01, ..., s33."""
    raise NotImplementedError("_dot_tile4x4 is only callable from Numba-compiled code")


@overload(_dot_tile4x4, inline="always")
def _dot_tile4x4_by_type(x, first_x_row, data, first_row, n):
    # as _dot_rows4
    if not _vector_loop_applies(x, data):
        return lambda x, first_x_row, data, first_row, n: _tile4x4_loop(x, first_x_row, data, first_row, 0, n)

    def vectors_then_rest(x, first_x_row, data, first_row, n):
        wide = n - n % DOT_LANES
        a = _dot_tile4x4_int8(x, first_x_row, data, first_row, wide)
        b = _tile4x4_loop(x, first_x_row, data, first_row, wide, n)
        return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6],
                a[7] + b[7], a[8] + b[8], a[9] + b[9], a[10] + b[10], a[11] + b[11], a[12] + b[12],
                a[13] + b[13], a[14] + b[14], a[15] + b[15])
    return vectors_then_rest


@njit(inline="always")
def _finish(total, scale, bias, apply_gelu):
    total = total * scale + bias
    return _gelu_scalar(total) if apply_gelu else total


@_threaded_and_serial(fastmath=_REDUCE)
def _matvec_out_in(x, data, scale, bias, apply_gelu, out):
    # x [m, n_in] @ widen(data [n_out, n_in]).T * scale[n_out] + bias -> out [m, n_out]: dot
    # products over contiguous weight rows. data: float32 (an [n_out, n_in] matrix such as the
    # tied LM head wte), uint16 (bfloat16), int16 (float16 bits) or int8; scale is all ones
    # except for int8.
    # Register tile: four outputs (weight rows) by four rows of x, sixteen running sums. Each
    # widened weight serves four rows and each x value four outputs, and the sixteen sums are
    # independent chains, so the FMA units are not left waiting on one sum's latency (with one
    # output at a time, batch-8 decode steps ran 15-30% slower, BENCHMARKS.md). Rows of x
    # past a multiple of four go one at a time (still four outputs); the last n_out % 4 outputs
    # one by one.
    m, n_in = x.shape
    n_out = data.shape[0]
    n_groups = n_out // 4
    for group in prange(n_groups + n_out % 4):
        if group >= n_groups:                              # a leftover output, alone
            o = 4 * n_groups + (group - n_groups)
            row = data[o]
            for r in range(m):
                total = np.float32(0.0)
                for i in range(n_in):
                    total += x[r, i] * _widen(row[i])
                out[r, o] = _finish(total, scale[o], bias[o], apply_gelu)
            continue
        o = 4 * group
        for ahead in range(4):
            _prefetch_row(data, o + PREFETCH_ROWS + ahead)
        r = 0
        while r + 4 <= m:
            (s00, s01, s02, s03, s10, s11, s12, s13,                          # s<row><output>
             s20, s21, s22, s23, s30, s31, s32, s33) = _dot_tile4x4(x, r, data, o, n_in)
            out[r, o], out[r, o + 1], out[r, o + 2], out[r, o + 3] = s00, s01, s02, s03
            out[r + 1, o], out[r + 1, o + 1], out[r + 1, o + 2], out[r + 1, o + 3] = s10, s11, s12, s13
            out[r + 2, o], out[r + 2, o + 1], out[r + 2, o + 2], out[r + 2, o + 3] = s20, s21, s22, s23
            out[r + 3, o], out[r + 3, o + 1], out[r + 3, o + 2], out[r + 3, o + 3] = s30, s31, s32, s33
            r += 4
        while r < m:
            out[r, o], out[r, o + 1], out[r, o + 2], out[r, o + 3] = _dot_rows4(x[r], data, o, n_in)
            r += 1
        for k in range(o, o + 4):                          # scale, bias, GELU on the raw sums
            for r in range(m):
                out[r, k] = _finish(out[r, k], scale[k], bias[k], apply_gelu)


@njit(error_model="numpy", cache=True)
def _widen_rows(data, scale, out):
    # data [rows, cols] packed (see _widen), scale [rows] -> out [rows, cols] float32
    for r in range(data.shape[0]):
        for c in range(data.shape[1]):
            out[r, c] = _widen(data[r, c]) * scale[r]


def _linear_packed(x2, weight, bias, apply_gelu, out):
    """linear() for a PackedWeight: the packed kernel for decode, dequantize + BLAS for prefill."""
    m = x2.shape[0]
    data = weight.data.view(np.int16) if weight.storage == "float16" else weight.data
    scale = weight.scale if weight.scale is not None else _ones(data.shape[0])
    if m <= PACKED_MATVEC_MAX_ROWS and weight.rows_are_outputs:
        serial = data.size <= SERIAL_MAX_ELEMENTS
        _matvec_out_in[serial](x2, data, scale, bias, apply_gelu, out)
    else:
        # a float32 copy of the stored rows (one pass, 1-2 ms for 768x3072, where NumPy's
        # float16 astype took 5), then BLAS on it in the logical layout
        rows = np.empty(data.shape, dtype=np.float32)
        _widen_rows(data, scale, rows)
        _blas_matmul(x2, rows.T if weight.rows_are_outputs else rows, out)
        _bias_act_inplace[BESIDE_BLAS_SERIAL or out.size <= SERIAL_MAX_ELEMENTS](out, bias, apply_gelu)
    return out


_ONES, _ZEROS = {}, {}


def _ones(n):
    """A cached float32 vector of n ones (the scale of unscaled weights; no head mask). Only
    kernels read it (a read-only flag would make Numba compile every kernel once more)."""
    if n not in _ONES:
        _ONES[n] = np.ones(n, dtype=np.float32)
    return _ONES[n]


def _zeros(n):
    """A cached float32 vector of n zeros (the missing bias of the LM head); only kernels read it."""
    if n not in _ZEROS:
        _ZEROS[n] = np.zeros(n, dtype=np.float32)
    return _ZEROS[n]


def _linear(x, weight, bias, apply_gelu):
    x2, lead = _rows(x, "x")
    packed = isinstance(weight, PackedWeight)
    if not packed and (type(weight) is not np.ndarray or weight.dtype != np.float32):
        weight = np.asarray(weight, dtype=np.float32)
    shape = weight.shape
    if len(shape) != 2 or shape[0] != x2.shape[1]:
        raise ValueError(f"weight must have shape ({x2.shape[1]}, n_out) for x of shape "
                         f"{tuple(lead) + (x2.shape[1],)}, got {shape}")
    n_out = shape[1]
    if _bfloat16_tiles_allowed(x2.shape[0], weight):
        from . import amx                          # noqa: PLC0415 (amx imports this module)
        out = np.empty((x2.shape[0], n_out), dtype=np.float32)
        weight_rows, scale = amx.bfloat16_weight_rows(weight)
        amx.linear(x2, weight_rows, scale, _vector(bias, n_out, "bias"), apply_gelu, out)
        return out.reshape(*lead, n_out)
    if packed:
        out = np.empty((x2.shape[0], n_out), dtype=np.float32)
        _linear_packed(x2, weight, _vector(bias, n_out, "bias"), apply_gelu, out)
        return out.reshape(*lead, n_out)
    bias = _vector(bias, n_out, "bias")
    m = x2.shape[0]
    out = np.empty((m, n_out), dtype=np.float32)
    if m <= MATVEC_MAX_ROWS and (m > 1 or FLOAT32_MATVEC == "numba"):
        serial = weight.size <= SERIAL_MAX_ELEMENTS
        if weight.flags.c_contiguous:
            _matvec_in_out[serial](x2, weight, bias, apply_gelu, 1 if serial else numba.get_num_threads(), out)
        elif weight.T.flags.c_contiguous:          # an [n_out, n_in] array seen transposed
            _matvec_out_in[serial](x2, weight.T, _ones(n_out), bias, apply_gelu, out)
        else:
            _matvec_in_out[serial](x2, np.ascontiguousarray(weight), bias, apply_gelu,
                                   1 if serial else numba.get_num_threads(), out)
    else:
        _blas_matmul(x2, weight, out)              # BLAS sgemm / sgemv, either layout
        _bias_act_inplace[BESIDE_BLAS_SERIAL or out.size <= SERIAL_MAX_ELEMENTS](out, bias, apply_gelu)
    return out.reshape(*lead, n_out)


def linear(x, weight, bias):
    """x [..., n_in] @ weight [n_in, n_out] + bias [n_out] -> [..., n_out] float32.

    `bias` may be None (the tied LM head). `weight` may be C-contiguous (the checkpoint's
    [n_in, n_out]) or the transpose of a C-contiguous [n_out, n_in] array (such as `wte.T`);
    both are streamed without a copy.
    """
    return _linear(x, weight, bias, False)


def linear_gelu(x, weight, bias):
    """gelu_new(linear(x, weight, bias)) with the GELU fused into the bias pass (the MLP's c_fc)."""
    return _linear(x, weight, bias, True)


@njit(cache=True)
def matmul_naive(x, weight, bias):
    """Twin of linear for tests: x [m, n_in] @ weight [n_in, n_out] + bias -> [m, n_out], float64 sums."""
    m, n_in = x.shape
    n_out = weight.shape[1]
    out = np.empty((m, n_out), dtype=np.float32)
    for r in range(m):
        for o in range(n_out):
            total = np.float64(bias[o])
            for i in range(n_in):
                total += np.float64(x[r, i]) * np.float64(weight[i, o])
            out[r, o] = total
    return out


# --------------------------------------------------------------------------------------------
# softmax over the last axis


@_threaded_and_serial(fastmath=_REDUCE)
def _softmax_rows(x, out):
    # x [n, s] -> out [n, s]; a row whose max is -inf (nothing to attend to) gets zeros, not NaN
    n, s = x.shape
    for r in prange(n):
        maxval = -np.inf
        for j in range(s):
            if x[r, j] > maxval:
                maxval = x[r, j]
        if maxval == -np.inf:
            out[r, :] = 0.0
            continue
        total = np.float32(0.0)
        for j in range(s):
            e = _exp(x[r, j] - maxval)
            out[r, j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(s):
            out[r, j] *= inv


def softmax(x, axis=-1):
    """Softmax along `axis` with max subtraction: same shape, float32.

    A row that is entirely -inf gives all zeros (instead of NaN).
    """
    x = np.moveaxis(np.asarray(x), axis, -1)
    x2, lead = _rows(x, "x")
    out = np.empty_like(x2)
    _softmax_rows[x2.size <= SERIAL_MAX_ELEMENTS](x2, out)
    return np.moveaxis(out.reshape(*lead, x2.shape[1]), -1, axis)


@njit(cache=True)
def softmax_naive(x):
    """Twin of softmax for tests: x [n, s] -> [n, s], float64 sums; an all -inf row -> zeros."""
    n, s = x.shape
    out = np.zeros((n, s), dtype=np.float32)
    for r in range(n):
        maxval = -np.inf
        for j in range(s):
            maxval = max(maxval, np.float64(x[r, j]))
        if maxval == -np.inf:
            continue
        total = 0.0
        for j in range(s):
            total += math.exp(x[r, j] - maxval)
        for j in range(s):
            out[r, j] = math.exp(x[r, j] - maxval) / total
    return out


# --------------------------------------------------------------------------------------------
# attention


@njit(inline="always")
def _softmax_visible_row(x, row_mask, maxval, head_scale):
    # x [s] scaled scores, row_mask [s], maxval = their max over the visible keys -> x in place:
    # pass 2: exp(score - max) and the sum, masked keys set to exactly 0;
    # pass 3: normalise (and apply the head mask, which HF multiplies after softmax).
    # Inlined into its callers, so it compiles with their fast-math flags.
    total = np.float32(0.0)
    for j in range(x.shape[0]):
        if row_mask[j]:
            e = _exp(x[j] - maxval)
            x[j] = e
            total += e
        else:
            x[j] = 0.0
    factor = head_scale / total
    for j in range(x.shape[0]):
        x[j] *= factor


@njit(inline="always")
def _row_max(x, n, lanes):
    # max of x[:n], -inf if n == 0 or all -inf; lanes: a float32 scratch of 16. A running max is
    # one long dependency chain (about 4 cycles per element, and LLVM will not vectorise a float
    # max without no-NaN fast-math); sixteen independent running maxima run 4x faster.
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


@_threaded_and_serial(fastmath=_REDUCE)
def _attention_kernel(query, key, value, mask, scale, head_scale, out, probs, write_probs):
    # query [b, h, t, d], key/value [b, h, >= s, d] (only the first s rows along axis 2 are read),
    # mask [b, t, s] (True = may attend), head_scale [h] -> out [b, h, t, d],
    # probs [b, h, t, s] (written only if write_probs). All C-contiguous, so that the dot products
    # over d vectorise. One (batch, head) pair per task; each query row runs four passes over
    # the keys, four keys at a time (one load of q and one update of the output row serve four).
    b, h, t, d = query.shape
    s = mask.shape[2]
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        scores = np.empty(s, dtype=np.float32)        # scratch per task, reused for every row
        lanes = np.empty(16, dtype=np.float32)
        for ti in range(t):
            q = query[bi, hi, ti]
            row_mask = mask[bi, ti]
            o_row = out[bi, hi, ti]
            # pass 1: scaled scores q.k (a masked key gets -inf, whatever its values), their max
            j = 0
            while j + 4 <= s:
                k0, k1, k2, k3 = key[bi, hi, j], key[bi, hi, j + 1], key[bi, hi, j + 2], key[bi, hi, j + 3]
                dot0 = dot1 = dot2 = dot3 = np.float32(0.0)
                for c in range(d):
                    dot0 += q[c] * k0[c]
                    dot1 += q[c] * k1[c]
                    dot2 += q[c] * k2[c]
                    dot3 += q[c] * k3[c]
                scores[j] = dot0 * scale if row_mask[j] else np.float32(-np.inf)
                scores[j + 1] = dot1 * scale if row_mask[j + 1] else np.float32(-np.inf)
                scores[j + 2] = dot2 * scale if row_mask[j + 2] else np.float32(-np.inf)
                scores[j + 3] = dot3 * scale if row_mask[j + 3] else np.float32(-np.inf)
                j += 4
            for j in range(j, s):
                k = key[bi, hi, j]
                dot = np.float32(0.0)
                for c in range(d):
                    dot += q[c] * k[c]
                scores[j] = dot * scale if row_mask[j] else np.float32(-np.inf)
            maxval = _row_max(scores, s, lanes)
            if maxval == -np.inf:                        # nothing to attend to: zeros, not NaN
                o_row[:] = 0.0
                if write_probs:
                    probs[bi, hi, ti, :] = 0.0
                continue
            # passes 2-3: softmax over the visible keys, times the head mask
            _softmax_visible_row(scores, row_mask, maxval, head_scale[hi])
            # pass 4: out = sum over visible keys of prob * value. A masked key is skipped, not
            # multiplied by 0, so a NaN in its value (padding) cannot reach the output.
            o_row[:] = 0.0
            j = 0
            while j + 4 <= s:
                if row_mask[j] and row_mask[j + 1] and row_mask[j + 2] and row_mask[j + 3]:
                    p0, p1, p2, p3 = scores[j], scores[j + 1], scores[j + 2], scores[j + 3]
                    v0, v1, v2, v3 = value[bi, hi, j], value[bi, hi, j + 1], value[bi, hi, j + 2], value[bi, hi, j + 3]
                    for c in range(d):
                        o_row[c] += p0 * v0[c] + p1 * v1[c] + p2 * v2[c] + p3 * v3[c]
                else:
                    for jj in range(j, j + 4):
                        if row_mask[jj]:
                            p = scores[jj]
                            v = value[bi, hi, jj]
                            for c in range(d):
                                o_row[c] += p * v[c]
                j += 4
            for j in range(j, s):
                if row_mask[j]:
                    p = scores[j]
                    v = value[bi, hi, j]
                    for c in range(d):
                        o_row[c] += p * v[c]
            if write_probs:
                probs[bi, hi, ti, :] = scores


@njit(fastmath=_REDUCE, error_model="numpy", cache=True)
def _masked_softmax_block(scores, mask, r0, scale, head_scale, factors):
    # scores [h, rows, n] = q.k of query rows r0 .. r0 + rows against keys 0 .. n (from BLAS),
    # mask [t, s] (True = may attend; only columns < n are read), head_scale [h] ->
    # scores in place: exp(scale * score - row max) on the visible keys, exactly 0 on masked
    # keys; factors [h, rows] = head_scale / (the row's sum), by which the caller multiplies the
    # row's output instead (an output row has d values, a score row n: one pass over the scores
    # fewer). A row with no visible key becomes all zeros with factor 0.
    h, rows, n = scores.shape
    lanes = np.empty(16, dtype=np.float32)              # _row_max's scratch, allocated once
    for hi in range(h):
        for r in range(rows):
            x = scores[hi, r]
            row_mask = mask[r0 + r]
            for j in range(n):             # pass 1: scale, -inf on masked keys, then the max
                x[j] = x[j] * scale if row_mask[j] else np.float32(-np.inf)
            maxval = _row_max(x, n, lanes)
            if maxval == -np.inf:
                x[:] = 0.0
                factors[hi, r] = 0.0
                continue
            total = np.float32(0.0)
            for j in range(n):             # pass 2: exp (exp(-inf) = 0 on masked keys), sum
                e = _exp(x[j] - maxval)
                x[j] = e
                total += e
            factors[hi, r] = head_scale[hi] / total


@njit(cache=True)
def _visible_extent(mask):
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


# Prefill attention with at least this many query rows uses BLAS for q.k and probs.v, in blocks
# of ATTENTION_BLOCK_ROWS query rows; each block stops at the last key any of its rows can see,
# so a causal prefill skips most of the masked upper triangle (about 45% of the work at 1024
# tokens with 128-row blocks) while the rest runs at BLAS speed.
ATTENTION_BLAS_MIN_ROWS = 32
ATTENTION_BLOCK_ROWS = 128


def _zero_nonfinite_hidden_keys(key, value, mask):
    """key, value [b, h, s, d] with zeros in the rows no query may see, if those hold NaN or inf.

    probs @ value multiplies a masked key's value by an exact 0, and 0 * NaN is NaN: a NaN in a
    padding position would reach every row of the block (PITFALLS 3). The looped kernel skips
    masked keys instead; here the few affected rows are zeroed in a copy. Checked only when a
    batch row has keys that no query sees (padding), so a plain causal prefill costs nothing.
    """
    hidden = ~mask.any(axis=1)                                      # [b, s]: padding keys
    if not hidden.any():
        return key, value
    hidden_rows = np.broadcast_to(hidden[:, None, :], key.shape[:3])  # [b, h, s]
    if np.isfinite(key[hidden_rows]).all() and np.isfinite(value[hidden_rows]).all():
        return key, value
    key, value = key.copy(), value.copy()
    key[hidden_rows] = 0.0
    value[hidden_rows] = 0.0
    return key, value


def _attention_blas(query, key, value, mask, scale, head_scale, out, probs):
    """Prefill attention by BLAS, one batch row and block of query rows (all heads) at a time.

    query [b, h, t, d], key/value [b, h, s, d] (any strides BLAS accepts), mask [b, t, s]
    C-contiguous -> out [b, h, t, d]; probs [b, h, t, s] zeros (filled) or None.
    """
    b, h, t, d = query.shape
    key, value = _zero_nonfinite_hidden_keys(key, value, mask)
    extent = _visible_extent(mask)                                  # [b, t]
    factors = np.empty((h, ATTENTION_BLOCK_ROWS), dtype=np.float32)  # head_scale / row sums
    for bi in range(b):
        for r0 in range(0, t, ATTENTION_BLOCK_ROWS):
            r1 = min(t, r0 + ATTENTION_BLOCK_ROWS)
            n = int(extent[bi, r0:r1].max())                        # keys this block can see
            if n == 0:
                out[bi, :, r0:r1] = 0.0
                continue
            # scores = q @ k.T   [h, rows, d] @ [h, d, n] -> [h, rows, n]
            scores = np.matmul(query[bi, :, r0:r1], key[bi, :, :n].swapaxes(-1, -2))
            # unnormalised masked softmax in place (masked keys -> 0), factors [h, rows]
            _masked_softmax_block(scores, mask[bi], r0, np.float32(scale), head_scale, factors)
            # out = (exp @ v) * factor   [h, rows, n] @ [h, n, d] -> [h, rows, d]
            block_out = out[bi, :, r0:r1]
            np.matmul(scores, value[bi, :, :n], out=block_out)
            block_out *= factors[:, :r1 - r0, None]
            if probs is not None:
                probs[bi, :, r0:r1, :n] = scores * factors[:, :r1 - r0, None]


def _check_attention_args(query, key, value, mask, head_mask):
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ValueError(f"query, key and value must be [batch, n_head, seq, head_dim], got shapes "
                         f"{query.shape}, {key.shape}, {value.shape}")
    b, h, t, d = query.shape
    s = key.shape[2]
    if key.shape != (b, h, s, d) or value.shape != (b, h, s, d):
        raise ValueError(f"key and value must have shape {(b, h, s, d)} to match query {query.shape}, "
                         f"got {key.shape} and {value.shape}")
    if mask.shape != (b, t, s):
        raise ValueError(f"mask must have shape {(b, t, s)} (batch, query, key), got {mask.shape}")
    if head_mask is not None and np.shape(head_mask) != (h,):
        raise ValueError(f"head_mask must have shape ({h},), got {np.shape(head_mask)}")


def _rows_buffer(a):
    """a [b, h, s, d] as a C-contiguous array whose first s rows along axis 2 are a.

    The KV cache hands out `buffer[:, :, :s]` of its preallocated C-contiguous buffer: the
    buffer itself is returned (no copy; the kernel reads only s rows). Any other strided view
    (a head split of the qkv projection) is copied, which is cheap next to the attention.
    """
    if a.flags.c_contiguous:
        return a
    base = a.base
    if (isinstance(base, np.ndarray) and base.ndim == 4 and base.flags.c_contiguous
            and base.dtype == a.dtype and base.shape[:2] == a.shape[:2] and base.shape[3] == a.shape[3]
            and a.strides == base.strides and _address(a) == _address(base)):
        return base
    return np.ascontiguousarray(a)


@njit(cache=True)
def _address(a):
    # the address of a's first element: 0.3 us here against 2.2 us for a.ctypes.data
    return a.ctypes.data


_NO_PROBS = np.empty((0, 0, 0, 0), dtype=np.float32)     # the kernel's probs when none are asked for


def attention(query, key, value, mask, scale, head_mask=None, output_attentions=False):
    """Masked scaled dot-product attention; masked keys are skipped, not filled.

    query [b, h, t, d], key/value [b, h, s, d], mask [b, t, s] bool (True = may attend),
    scale float, head_mask [h] or None -> (out [b, h, t, d], probs [b, h, t, s] or None).
    probs = softmax over the visible keys (0 elsewhere) times head_mask[h]; a query row with no
    visible key gets all-zero probs and a zero output.
    """
    query = np.asarray(query, dtype=np.float32)
    key = np.asarray(key, dtype=np.float32)
    value = np.asarray(value, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.bool_)
    _check_attention_args(query, key, value, mask, head_mask)
    b, h, t, d = query.shape
    s = key.shape[2]
    head_scale = _vector(head_mask, h, "head_mask") if head_mask is not None else _ones(h)
    out = np.empty((b, h, t, d), dtype=np.float32)
    if not output_attentions and d % 32 == 0 and _bfloat16_tiles_allowed(t):
        from . import amx                          # noqa: PLC0415 (amx imports this module)
        key, value = _zero_nonfinite_hidden_keys(key, value, mask)
        return amx.attention(query, key, value, mask, scale, head_scale), None
    if t >= ATTENTION_BLAS_MIN_ROWS:
        probs = np.zeros((b, h, t, s), dtype=np.float32) if output_attentions else None
        _attention_blas(query, key, value, mask, scale, head_scale, out, probs)
        _note_blas_call()
        return out, probs
    # probs is only allocated when asked for; the kernel still needs an array of the right rank
    probs = np.empty((b, h, t, s), dtype=np.float32) if output_attentions else _NO_PROBS
    query, key, value = _rows_buffer(query), _rows_buffer(key), _rows_buffer(value)
    beside_blas = BESIDE_BLAS_SERIAL and time.perf_counter() - _last_blas_call < BLAS_SPIN_SECONDS
    kernel = _attention_kernel[beside_blas or b * h * t * s * d <= 4 * SERIAL_MAX_ELEMENTS]
    kernel(query, key, value, mask, np.float32(scale), head_scale, out, probs, bool(output_attentions))
    return out, (probs if output_attentions else None)


@njit(cache=True)
def attention_naive(query, key, value, mask, scale, head_scale):
    """Twin of attention for tests (no skipping: masked scores filled, then zeroed).

    Same shapes as attention; head_scale [h] (ones for no head mask); returns (out, probs).
    """
    b, h, t, d = query.shape
    s = key.shape[2]
    out = np.zeros((b, h, t, d), dtype=np.float32)
    probs = np.zeros((b, h, t, s), dtype=np.float32)
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                scores = np.full(s, -np.inf)
                for j in range(s):
                    if mask[bi, ti, j]:
                        dot = 0.0
                        for c in range(d):
                            dot += np.float64(query[bi, hi, ti, c]) * key[bi, hi, j, c]
                        scores[j] = dot * scale
                maxval = scores.max()
                if maxval == -np.inf:
                    continue
                weights = np.exp(scores - maxval)
                weights = weights / weights.sum() * head_scale[hi]
                for j in range(s):
                    probs[bi, hi, ti, j] = weights[j]
                    for c in range(d):
                        out[bi, hi, ti, c] += weights[j] * value[bi, hi, j, c]
    return out, probs
