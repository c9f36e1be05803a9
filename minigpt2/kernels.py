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
  four rows of x). Both are in ``matvec.py``; the one that reads a row per output prefetches
  the rows ahead: the hardware prefetcher alone leaves bandwidth unused there.
* Prefill (many tokens) is compute-bound: the matmuls go to BLAS (``np.matmul``, outside Numba,
  which has no BLAS without SciPy), and a Numba pass adds the bias (and GELU) in place.
* Attention: in a prefill, BLAS computes q.k and probs.v in blocks of query rows that stop at
  the last key a block may see (so most of the causal upper triangle is skipped), with a Numba
  masked softmax in between; in a decode step, one kernel runs numbered passes per query row
  (llm.c style) over the visible keys only, so a padded key never touches a real row.
* Elementwise work (bias, GELU, layer norm) is one pass over rows, serial next to BLAS (see
  BESIDE_BLAS_SERIAL).

With matmul precision "medium" (``set_float32_matmul_precision``), prefill matmuls and attention
go to ``amx.py`` instead, where the CPU has AMX. The kernels' building blocks (compiling twice,
intrinsics, a vectorisable exp) are in ``jit.py``.

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
import time

import numba
import numpy as np
from numba import njit, prange

from .jit import _REDUCE, _SQRT_2_OVER_PI, _exp, _gelu_scalar, _threaded_and_serial
from .matvec import _matvec_in_out, _matvec_out_in, _widen_rows
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
