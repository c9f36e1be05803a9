"""How fast one decode step's weights stream through the matrix-vector kernels on this CPU, and
which prefetch hint and kernel shape serve it best: the measurement behind matvec.py's choices.

    python benchmarks/bench_decode_streaming.py [bfloat16|float16|int8|float32 ...]

All 49 matrices of a GPT-2 124M decode step (the 48 block matrices stored [n_out, n_in], and the
LM head), random values, one row of x, 2 threads. Each variant streams the whole step in turn,
12 rounds, variants alternating inside each round (so a noisy neighbour hits them alike); the
table gives the median GB/s. Variants:

  engine one-row      matvec.matvec_out_in_one_row as linear() calls it (policy's prefetch)
  engine 4x4 tile     matvec.matvec_out_in (the kernel for 2-32 rows), on one row
  one-row, hint H     one output row at a time; prefetch 24 KB ahead with locality H
                      (3: PREFETCHT0 into L1, 2: T1, 1: T2 into L2, 0: NTA), or none
  4 rows, hint H      four output rows per step (the tile's stream shape), prefetch as above
  plain sum           a sum over every weight: the ceiling for one sequential stream per thread
"""

import sys
import time

import numba
import numpy as np
from numba import njit, prange

from minigpt2.bench import machine_description
from minigpt2.engine import policy
from minigpt2.engine.jit import REDUCE, ones, prefetch_with_locality
from minigpt2.engine.matvec import matvec_out_in, matvec_out_in_one_row, widen

SHAPES = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12 + [(50257, 768)]
STORED = {"float32": np.float32, "bfloat16": np.uint16, "float16": np.int16, "int8": np.int8}


def kernels(locality):
    """(one-row kernel, four-row kernel) prefetching with `locality` (None: no prefetch)."""
    prefetch = prefetch_with_locality(0 if locality is None else locality)
    use_prefetch = locality is not None

    @njit(inline="always")
    def prefetch_row(matrix, row):
        if use_prefetch and row < matrix.shape[0]:
            for col in range(0, matrix.shape[1], max(1, 64 // matrix.itemsize)):
                prefetch(matrix, row, col)

    @njit(parallel=True, fastmath=REDUCE, error_model="numpy")
    def one_row(x, data, out):
        n_out, n_in = data.shape
        ahead = max(4, 24576 // (n_in * data.itemsize))
        for o in prange(n_out):
            prefetch_row(data, o + ahead)
            total = np.float32(0.0)
            for i in range(n_in):
                total += x[i] * widen(data[o, i])
            out[o] = total

    @njit(parallel=True, fastmath=REDUCE, error_model="numpy")
    def four_rows(x, data, out):
        n_out, n_in = data.shape
        ahead = max(4, 24576 // (n_in * data.itemsize))
        for group in prange(n_out // 4):
            o = 4 * group
            for k in range(4):
                prefetch_row(data, o + ahead + k)
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for i in range(n_in):
                v = x[i]
                s0 += v * widen(data[o, i]); s1 += v * widen(data[o + 1, i])      # noqa: E702
                s2 += v * widen(data[o + 2, i]); s3 += v * widen(data[o + 3, i])  # noqa: E702
            out[o], out[o + 1], out[o + 2], out[o + 3] = s0, s1, s2, s3
    return one_row, four_rows


@njit(parallel=True, fastmath=REDUCE, error_model="numpy")
def plain_sum(data, out):
    n_out, n_in = data.shape
    for o in prange(n_out):
        total = np.float32(0.0)
        for i in range(n_in):
            total += widen(data[o, i])
        out[o] = total


def measure(dtype, rounds=12):
    rng = np.random.default_rng(0)
    stored = STORED[dtype]
    mats = [rng.standard_normal(s, dtype=np.float32) if dtype == "float32"
            else rng.integers(0, 2 ** 14 if stored != np.int8 else 100, s).astype(stored) for s in SHAPES]
    xs = [rng.standard_normal(s[1]).astype(np.float32) for s in SHAPES]
    outs = [np.empty(s[0], np.float32) for s in SHAPES]
    zeros = [np.zeros(s[0], np.float32) for s in SHAPES]
    variants = {
        "engine one-row": lambda x, d, o, z: matvec_out_in_one_row(x, d, ones(d.shape[0]), z, False,
                                                                        policy.one_row_prefetch_rows(d), o),
        "engine 4x4 tile": lambda x, d, o, z: matvec_out_in[False](x[None], d, ones(d.shape[0]), z, False, o[None]),
    }
    for locality in (None, 3, 1, 0):
        one_row, four_rows = kernels(locality)
        hint = "none" if locality is None else str(locality)
        variants[f"one-row, hint {hint}"] = (lambda k: lambda x, d, o, z: k(x, d, o))(one_row)
        variants[f"4 rows, hint {hint}"] = (lambda k: lambda x, d, o, z: k(x, d, o))(four_rows)
    variants["plain sum"] = lambda x, d, o, z: plain_sum(d, o)
    times = {name: [] for name in variants}
    for run in variants.values():                      # compile and warm up
        for args in zip(xs, mats, outs, zeros):
            run(*args)
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            for args in zip(xs, mats, outs, zeros):
                run(*args)
            times[name].append(time.perf_counter() - start)
    total_bytes = sum(m.nbytes for m in mats)
    return {name: total_bytes / float(np.median(t)) / 1e9 for name, t in times.items()}, total_bytes


def main():
    dtypes = sys.argv[1:] or ["bfloat16", "int8"]
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    print(f"# {machine_description()}; {numba.get_num_threads()} threads")
    results = {dtype: measure(dtype) for dtype in dtypes}
    print("\n| variant | " + " | ".join(f"{d} GB/s ({results[d][1] / 1e6:.0f} MB)" for d in dtypes) + " |")
    print("|---|" + "---:|" * len(dtypes))
    for name in results[dtypes[0]][0]:
        print(f"| {name} | " + " | ".join(f"{results[d][0][name]:.1f}" for d in dtypes) + " |")


if __name__ == "__main__":
    main()
