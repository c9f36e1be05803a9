"""The machine's ceilings for GPT-2 on CPU: memory bandwidth (decode) and matmul speed (prefill).

Decoding streams every weight once per token, so bandwidth / bytes per token is the decode speed
no engine can pass; prefill is matrix products, so the BLAS GFLOP/s on the prefill shapes bounds
it. This script measures both, side by side in one run, for the BLAS that NumPy uses (the one
the engine calls) and, when torch is installed, the one transformers uses (torch's MKL):

    python benchmarks/bench_ceilings.py [--threads 2]

Rows: sgemm GFLOP/s on the four matmul shapes of a 512-token GPT-2 124M prefill, and GB/s of a
512 MB float32 matrix-vector product (the engine's Numba kernel, NumPy's sgemv, torch's mv).
"""

import argparse

import numpy as np

from minigpt2 import bench, engine

# the four linear layers of a GPT-2 124M block on a 512-token prompt: [t, n_in] @ [n_in, n_out]
SHAPES = {"c_attn 512x768 @ 768x2304": (512, 768, 2304), "attn c_proj 512x768 @ 768x768": (512, 768, 768),
          "c_fc 512x768 @ 768x3072": (512, 768, 3072), "mlp c_proj 512x3072 @ 3072x768": (512, 3072, 768)}
REPEATS = 7                       # each figure is the best of this many calls (after one warm-up)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    engine.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    rows = []
    for label, (m, k, n) in SHAPES.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)
        flops = 2 * m * k * n
        cells = [flops / bench.best_seconds(lambda: np.matmul(a, b, out=out), REPEATS) / 1e9]
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            cells.append(flops / bench.best_seconds(lambda: torch.matmul(ta, tb), REPEATS) / 1e9)
        rows.append((f"sgemm GFLOP/s, {label}", cells))

    bandwidth = bench.measure_bandwidth(args.threads)          # the engine's kernel and NumPy's sgemv
    cells = [bandwidth["blas"]]
    if torch is not None:                                       # torch.mv on a matrix of the same size
        matrix = torch.full((512_000_000 // (4 * 768), 768), 0.01)
        vector = torch.ones(768)
        cells.append(matrix.numel() * 4 / bench.best_seconds(lambda: torch.mv(matrix, vector), REPEATS) / 1e9)
        del matrix
    rows.append(("matrix-vector GB/s, 512 MB float32 (NumPy column: sgemv)", cells))
    rows.append(("matrix-vector GB/s, the engine's Numba kernel (prefetching)", [bandwidth["numba"]]))

    print(f"{bench.machine_description()}; {args.threads} threads\n")
    print("| | NumPy's BLAS (the engine's) |" + (" torch (transformers') |" if torch is not None else ""))
    print("|---|---:|" + ("---:|" if torch is not None else ""))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    streamed = bench.streamed_bytes_per_token("gpt2", "float32")
    best = max(max(cells) for label, cells in rows if "GB/s" in label)
    print(f"\nGPT-2 124M decode streams {streamed / 1e6:.0f} MB of float32 weights per token: at "
          f"{best:.1f} GB/s no engine decodes faster than {best / (streamed / 1e9):.0f} tok/s here.")


if __name__ == "__main__":
    main()
