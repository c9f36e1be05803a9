"""Which path each engine call takes: thread counts, BLAS coordination, matmul precision.

Every kernel in the engine comes in a threaded and a serial build (``jit.threaded_and_serial``);
``run_serial`` is the one place that picks between them. The other choices made here:

* how many rows count as a decode step (matrix-vector kernels) and when BLAS takes over;
* when OpenBLAS's threads may still be spinning (``blas_ran_recently``): Numba's worker threads
  and OpenBLAS's both spin for a while after they finish, and on a machine with few cores the two
  pools then stall each other, so a pass that runs between BLAS calls takes the serial build;
* the float32 matmul precision (``set_float32_matmul_precision``, as torch's), and so whether a
  prefill goes to the AMX tiles (``amx.py``).

The numbers behind each threshold are in BENCHMARKS.md ("kernel decisions"); comments here say
why a threshold exists, not how fast anything ran.
"""

import ctypes
import glob
import os
import time

import numba
import numpy as np

from minigpt2.engine import amx, jit

# linear() on at most this many rows of float32 weights (a decode step) runs a matrix-vector
# kernel; more rows go to BLAS sgemm, which packs (copies) the weight on every call and so only
# pays off once several rows share the copy.
MATVEC_MAX_ROWS = 8
# Packed (bfloat16 / float16 / int8) weights on at most this many rows go through the packed
# matrix-vector kernel; more rows (a prefill) widen the matrix to float32 once and call BLAS.
# Below the crossing point widening the whole matrix per call costs more than it saves.
PACKED_MATVEC_MAX_ROWS = 32
# Batch-1 decode over int8 weights prefetches the rows ahead (one_row_prefetch_rows); the wider
# types leave their one sequential stream to the CPU's prefetcher, which kept up on its own.
PREFETCH_ONE_ROW_DTYPES = ("int8",)
# Float32 weights, one row (batch-1 decode): "blas" (sgemv, then the Numba bias / GELU pass) or
# "numba" (the matvec kernels). BLAS's sgemv streams a matrix at the memory's speed already.
FLOAT32_MATVEC = "blas"
# Inputs with at most this many elements run the serial build of a kernel: starting threads
# costs more than they save there, and far more when other processes keep the cores busy.
SERIAL_MAX_ELEMENTS = 1 << 16
# Passes that run between BLAS calls (layer norm, bias + GELU after a matmul, the masked softmax
# between the attention matmuls, decode attention next to sgemv) take the serial build, so that
# Numba's spinning workers and OpenBLAS's never fight over the cores.
BESIDE_BLAS_SERIAL = True
# OpenBLAS's workers spin for about 2**28 cycles after a call; a decode step of packed weights
# calls no BLAS at all, so once this long has passed its attention may run threaded.
BLAS_SPIN_SECONDS = 0.25
# With precision "medium", a bfloat16 weight used as stored (nothing converted per call) takes the
# AMX kernel from this many rows on (a batched decode step).
AMX_STORED_MIN_ROWS = 16

PRECISIONS = ("highest", "high", "medium")
INT8_COMPUTES = ("float32", "int8")
_state = {"precision": "highest", "int8_compute": "float32", "last_blas_call": 0.0}


def run_serial(n_elements, beside_blas=False):
    """Whether a kernel should take its serial build: a small input, or a pass between BLAS calls."""
    return n_elements <= SERIAL_MAX_ELEMENTS or (beside_blas and BESIDE_BLAS_SERIAL)


def one_row_prefetch_rows(data):
    """How many rows ahead matvec.matvec_out_in_one_row prefetches over `data` (0: none)."""
    if data.dtype.name not in PREFETCH_ONE_ROW_DTYPES:
        return 0
    return max(1, jit.PREFETCH_BYTES // (data.shape[1] * data.itemsize))


def blas_matmul(a, b, out):
    """np.matmul(a, b, out=out), remembering when BLAS last ran (see blas_ran_recently)."""
    np.matmul(a, b, out=out)
    note_blas_call()
    return out


def note_blas_call():
    """Remember that BLAS ran just now."""
    _state["last_blas_call"] = time.perf_counter()


def blas_ran_recently():
    """True while OpenBLAS's threads may still be spinning after its last call."""
    return time.perf_counter() - _state["last_blas_call"] < BLAS_SPIN_SECONDS


# ---- threads ---------------------------------------------------------------------------------

def openblas_set_num_threads():
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
    blas_set = openblas_set_num_threads()
    if blas_set is None:
        return False
    blas_set(int(num_threads))
    return True


# ---- precision -------------------------------------------------------------------------------

def set_float32_matmul_precision(precision):
    """How prefill matmuls may compute, as torch.set_float32_matmul_precision.

    "highest" (the default) and "high": float32 products and sums, everywhere. "medium": on a
    CPU with AMX (``amx.available()``), the matmuls of more than PACKED_MATVEC_MAX_ROWS rows (a
    prefill, not a decode step) and prefill attention round both operands to bfloat16 and sum
    in float32 on AMX tiles; without AMX it changes nothing, as torch's setting changes nothing
    without a fast kernel. Layer norm and decoding stay float32. Only the numba backend reads
    this; the numpy backend always computes in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    _state["precision"] = precision


def get_float32_matmul_precision():
    """The precision set by set_float32_matmul_precision ("highest" unless changed)."""
    return _state["precision"]


def bfloat16_tiles_allowed(m, weight=None):
    """Whether linear() on m rows of `weight` (attention: weight None) takes the AMX path:
    precision "medium" on a CPU with AMX, and a prefill (more than PACKED_MATVEC_MAX_ROWS rows)
    or a batch of AMX_STORED_MIN_ROWS+ rows over a weight used as stored. One-row decode steps
    stay float32: they are bound by memory, not arithmetic."""
    if _state["precision"] != "medium" or m < AMX_STORED_MIN_ROWS:
        return False
    if m <= PACKED_MATVEC_MAX_ROWS and not (weight is not None and amx.uses_weight_as_stored(weight)):
        return False
    return amx.available()


# ---- int8 weights ------------------------------------------------------------------------------

def set_int8_compute(compute):
    """How a batch-1 decode step multiplies int8 weights.

    "float32" (the default): each weight widened to float32, times the float32 activations.
    "int8": the activations rounded to int8 too, per block of 32 with one float32 scale each, and
    multiplied in integers on the CPU's dot-product instructions (int8_dot.py), as llama.cpp's
    q8_0. An opt-in trade of accuracy for speed (BENCHMARKS.md measures both); prefill and
    batched decode keep float32 activations. Matrices whose width is not a multiple of 32 stay
    float32 too. Only the numba backend reads this.
    """
    if compute not in INT8_COMPUTES:
        raise ValueError(f"int8 compute must be one of {INT8_COMPUTES}, got {compute!r}")
    _state["int8_compute"] = compute


def get_int8_compute():
    """The setting of set_int8_compute ("float32" unless changed)."""
    return _state["int8_compute"]
