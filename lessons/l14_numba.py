"""Lesson 14: Numba kernels next to their NumPy twins, and where the time goes.

ops.py is the readable NumPy version of every op; minigpt2/engine/ computes the same functions with
Numba (@njit compiles a Python loop to machine code; prange runs the outer loop on all cores).
NumPy already calls BLAS for big matmuls, so Numba pays off where NumPy makes temporaries or
passes over memory several times: layer norm (mean, variance, scale in one pass per row),
GELU (one pass instead of ~8 temporaries), attention on one new token, and the decode-time
matrix-vector products that must stream the weights at full memory bandwidth.

We write a layer-norm kernel in a dozen lines, check it against NumPy, minigpt2.engine and
torch, measure compile time separately (the first call compiles; cache=True keeps the machine
code on disk for the next process), and time numpy vs numba for the ops at GPT-2 124M's sizes.
Timings on a shared machine are noisy: compare the columns of one run, not runs.

    python -m lessons.l14_numba [--fast] [--figures DIR]
"""

import time

import numpy as np
from numba import njit, prange

from lessons._common import (check, figure_path, fixture_weights, parse_args, pyplot, reference_npz, run,
                             save, title)


@njit(parallel=True, cache=True)
def layer_norm_kernel(x, weight, bias, eps):
    """x [rows, c] float32 -> [rows, c]. The piece this lesson teaches: one row per thread."""
    rows, c = x.shape
    out = np.empty_like(x)
    for r in prange(rows):
        mean = 0.0                                                     # float64 accumulators
        for j in range(c):
            mean += x[r, j]
        mean /= c
        var = 0.0
        for j in range(c):
            var += (x[r, j] - mean) ** 2
        inv = 1.0 / np.sqrt(var / c + eps)                             # biased variance, eps inside
        for j in range(c):
            out[r, j] = (x[r, j] - mean) * inv * weight[j] + bias[j]
    return out


def best_ms(function, repeats):
    function()                                                         # warm up (compile)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main(argv=None):
    args = parse_args(__doc__, argv)
    from minigpt2 import engine, ops

    title("compile once, then run")
    x = np.random.default_rng(0).standard_normal((64, 768)).astype(np.float32)
    w, b = np.ones(768, np.float32), np.zeros(768, np.float32)
    start = time.perf_counter()
    layer_norm_kernel(x, w, b, 1e-5)
    first = time.perf_counter() - start
    print(f"first call (compile, or load from the on-disk cache): {first * 1e3:.0f} ms; "
          f"later calls: {best_ms(lambda: layer_norm_kernel(x, w, b, 1e-5), 5):.3f} ms")

    import numba
    title(f"numpy (ops.py) vs numba (engine.py), GPT-2 124M sizes, {numba.get_num_threads()} numba threads")
    rng = np.random.default_rng(1)
    c, inner, h, d = 768, 3072, 12, 64
    s = 128 if args.fast else 512                                      # tokens in the cache
    x1 = rng.standard_normal((1, 1, c)).astype(np.float32)            # one decode step
    xs = rng.standard_normal((1, 64, c)).astype(np.float32)           # a short prefill
    w_fc = (rng.standard_normal((c, inner)) / np.sqrt(c)).astype(np.float32)
    b_fc = np.zeros(inner, np.float32)
    hidden = rng.standard_normal((1, 64, inner)).astype(np.float32)
    q = rng.standard_normal((1, h, 1, d)).astype(np.float32)
    k, v = (rng.standard_normal((1, h, s, d)).astype(np.float32) for _ in range(2))
    mask = np.ones((1, 1, s), bool)
    cases = {
        "layer_norm [64, 768]": lambda m: m.layer_norm(xs, w, b, 1e-5),
        "gelu_new [64, 3072]": lambda m: m.gelu_new(hidden),
        "linear 1 row 768->3072": lambda m: m.linear(x1, w_fc, b_fc),
        "linear 64 rows 768->3072": lambda m: m.linear(xs, w_fc, b_fc),
        f"attention 1 query, {s} keys": lambda m: m.attention(q, k, v, mask, d ** -0.5)[0],
    }
    repeats = 3 if args.fast else 20
    rows = []
    print(f"{'op':30s} {'numpy ms':>10s} {'numba ms':>10s} {'speed-up':>9s} {'max |diff|':>11s}")
    for name, case in cases.items():
        t_np, t_nb = best_ms(lambda: case(ops), repeats), best_ms(lambda: case(engine), repeats)
        out_np, out_nb = case(ops), case(engine)
        rows.append((name, t_np, t_nb, out_np, out_nb))
        print(f"{name:30s} {t_np:10.3f} {t_nb:10.3f} {t_np / t_nb:8.1f}x {np.abs(out_np - out_nb).max():11.2e}")

    title("a cost model: bytes and FLOPs decide which ops can be fast")
    # A linear layer on m rows reads its weight once (4 c * inner bytes in float32) and does 2 m c inner
    # FLOPs. With one row (a decode step) that is half a FLOP per byte: the time is the time to stream
    # the weight from memory, whatever the arithmetic does. With 64 rows (a prefill) it is 32 FLOPs per
    # byte: the arithmetic sets the time. The roofline: time >= max(bytes / bandwidth, FLOPs / peak).
    print(f"{'linear 768->3072, rows':24s} {'MB moved':>9s} {'MFLOP':>8s} {'FLOP/byte':>10s} {'ms':>8s} "
          f"{'GB/s':>7s} {'GFLOP/s':>8s}")
    costs = []
    for m in (1, 4, 16, 64):
        xm = rng.standard_normal((1, m, c)).astype(np.float32)
        nbytes = 4 * (c * inner + inner + m * c + m * inner)            # weight, bias, input, output
        flops = 2 * m * c * inner
        ms = best_ms(lambda: engine.linear(xm, w_fc, b_fc), repeats)
        costs.append((m, nbytes, flops, ms))
        print(f"{m:24d} {nbytes / 1e6:9.2f} {flops / 1e6:8.1f} {flops / nbytes:10.2f} {ms:8.3f} "
              f"{nbytes / ms / 1e6:7.1f} {flops / ms / 1e6:8.1f}")
    print("what you should see (on a quiet machine): FLOP/byte grows with the rows; at 1 row the GB/s column is near this machine's "
          "memory bandwidth (decode is memory-bound, lesson 09's ceiling), while the GFLOP/s column grows "
          "with the rows until the arithmetic is the limit (prefill is compute-bound)")

    path = figure_path(args, "l14_numpy_vs_numba.png")
    if path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 3.8))
        pos = np.arange(len(rows))
        ax.barh(pos - 0.2, [r[1] for r in rows], 0.4, label="numpy (ops.py)")
        ax.barh(pos + 0.2, [r[2] for r in rows], 0.4, label="numba (engine.py)")
        ax.set_yticks(pos, [r[0] for r in rows], fontsize=8), ax.invert_yaxis()
        ax.set_xscale("log"), ax.set_xlabel("best time, ms (log scale; shorter is faster)"), ax.legend()
        ax.set_title("the same ops, two backends (one run on this machine)", fontsize=9)
        save(fig, path)

    title("checks")
    ref = reference_npz("numerics.npz")
    ln_x = ref["ln_x"].reshape(-1, 16)
    ours = layer_norm_kernel(ln_x, ref["ln_weight"], ref["ln_bias"], 1e-5)
    check("our kernel == torch layer_norm", ours, ref["ln_out"].reshape(-1, 16), tol=1e-5)
    check("our kernel == minigpt2.ops.layer_norm (numpy)", layer_norm_kernel(x, w, b, 1e-5),
          ops.layer_norm(x, w, b), tol=1e-5)
    check("our kernel == minigpt2.engine.layer_norm", layer_norm_kernel(x, w, b, 1e-5),
          engine.layer_norm(x, w, b), tol=1e-5)
    for name, _, _, out_np, out_nb in rows:
        check(f"kernels == ops: {name}", out_nb, out_np, tol=1e-5, relative=True)
    # the cost model by hand, one decode row: 768 x 3072 weights + 3072 biases + 768 in + 3072 out, float32
    check("bytes of one decode row, by hand", costs[0][1], 4 * (2359296 + 3072 + 768 + 3072), tol=0)
    check("FLOPs of one decode row = 2 x 768 x 3072", costs[0][2], 4718592, tol=0)
    from minigpt2.model import GPT2LMHeadModel
    config, weights, fixture_ref = fixture_weights("tiny")
    logits = GPT2LMHeadModel(config, weights, backend="numba")(fixture_ref["input_ids"]).logits
    check("whole model, numba backend == transformers' logits (fixture tiny)", logits, fixture_ref["logits"],
          tol=1e-5, relative=True)
    return 0


if __name__ == "__main__":
    run(main)
