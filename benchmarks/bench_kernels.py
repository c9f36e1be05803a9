"""Which kernel should `linear` use? Prints one table: the four GPT-2 124M weight matrices of
all 12 layers (340 MB, float32) multiplied by m = 1..32 rows, with each candidate kernel, as
GB/s of weights streamed (higher is better) — measured side by side in one run.

    python benchmarks/bench_kernels.py [--rows 1 2 4 8 16 32] [--repeats 7] [--threads 2]

Candidates: `in_out` (streams the checkpoint's [n_in, n_out] layout, partial sums per thread),
`out_in` (one dot product per output over a transposed [n_out, n_in] copy), and NumPy's BLAS
(`np.matmul`, either layout) plus the bias pass the engine adds after it.
"""

import argparse

import numba
import numpy as np

from minigpt2 import bench, engine
from minigpt2.engine import linear_op, matvec


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--n-layer", type=int, default=12)
    args = parser.parse_args()
    engine.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    c = args.n_embd
    shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)]          # c_attn, c_proj, c_fc, mlp.c_proj
    weights = [[rng.standard_normal(shape, dtype=np.float32) for shape in shapes] for _ in range(args.n_layer)]
    weights_t = [[np.ascontiguousarray(w.T).T for w in layer] for layer in weights]   # same values, [out, in] in memory
    biases = [np.zeros(shape[1], np.float32) for shape in shapes]
    n_bytes = sum(w.nbytes for layer in weights for w in layer)
    n_threads = numba.get_num_threads()

    def run(kernel, layers, m):
        xs = {n: rng.standard_normal((m, n), dtype=np.float32) for n in (c, 4 * c)}
        outs = [np.empty((m, shape[1]), np.float32) for shape in shapes]

        def sweep():
            for layer in layers:
                for j, w in enumerate(layer):
                    kernel(xs[w.shape[0]], w, biases[j], outs[j])
        return sweep

    candidates = {
        "in_out": (lambda x, w, b, out: matvec.matvec_in_out[False](x, w, b, False, n_threads, out), weights),
        "out_in": (lambda x, w, b, out: matvec.matvec_out_in[False](x, w.T, np.ones_like(b), b, False, out), weights_t),
        "blas": (lambda x, w, b, out: linear_op.bias_act_inplace[False](np.matmul(x, w, out=out), b, False), weights),
        "blas_T": (lambda x, w, b, out: linear_op.bias_act_inplace[False](np.matmul(x, w, out=out), b, False), weights_t),
    }
    print(f"# {len(shapes) * args.n_layer} matrices, {n_bytes / 1e6:.0f} MB float32, {n_threads} threads; "
          f"GB/s of weights streamed (best of {args.repeats})")
    print("| rows | " + " | ".join(candidates) + " |")
    print("|---:|" + "---:|" * len(candidates))
    for m in args.rows:
        cells = []
        for name, (kernel, layers) in candidates.items():
            seconds = bench.best_seconds(run(kernel, layers, m), args.repeats)
            cells.append(f"{n_bytes / seconds / 1e9:.1f}")
        print(f"| {m} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
