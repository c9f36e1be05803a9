"""How fast are the AMX kernels (minigpt2/amx.py) against float32 BLAS? Prints one table.

The four matrix products of every layer of GPT-2 124M (distinct random weights per layer, so
they come from memory as in a real prefill) on m rows, three ways, alternating round by round:
NumPy's BLAS sgemm on float32 weights (the "highest" path), `engine.linear` on bfloat16 weights
with matmul precision "medium" (the AMX path), and attention of one layer (12 heads, causal) by
BLAS and by AMX. Milliseconds (best of --rounds) and GFLOP/s. The AMX figures include packing x
and writing the output back, as `linear` does them.

    python benchmarks/bench_amx.py [--rows 32 128 512 1024] [--rounds 5] [--threads 2]

Needs a CPU with AMX (amx.available()); elsewhere it says so and stops.
"""

import argparse
import time

import numpy as np

from minigpt2 import bench, engine
from minigpt2.engine import amx, policy
from minigpt2.weights.packed import PackedWeight

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]      # c_attn, attn c_proj, c_fc, mlp c_proj


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[32, 128, 512, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not amx.available():
        print("this CPU (or OS) has no AMX: amx.available() is False")
        return
    engine.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    float32_layers = [[(rng.standard_normal(shape) * 0.02).astype(np.float32) for shape in SHAPES]
                      for _ in range(12)]
    bfloat16_layers = [[PackedWeight.pack(w, "bfloat16") for w in layer] for layer in float32_layers]
    print(f"# {bench.machine_description()}; {args.threads} threads; best of {args.rounds} rounds\n")
    print("| rows | 12 layers' matmuls, float32 BLAS (ms) | bfloat16 AMX (ms) | GFLOP/s BLAS | GFLOP/s AMX "
          "| attention, 1 layer, BLAS (ms) | AMX (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for m in args.rows:
        x = {n_in: rng.standard_normal((m, n_in)).astype(np.float32) for n_in in (768, 3072)}
        q, k, v = (rng.standard_normal((1, 12, m, 64)).astype(np.float32) for _ in range(3))
        mask = np.broadcast_to(np.tril(np.ones((m, m), dtype=bool)), (1, m, m))
        times = {"blas": [], "amx": [], "attention blas": [], "attention amx": []}
        for _ in range(args.rounds + 1):                                   # the first round warms up
            for name, layers, precision in (("blas", float32_layers, "highest"), ("amx", bfloat16_layers, "medium")):
                engine.set_float32_matmul_precision(precision)
                # OpenBLAS's threads spin for ~0.1 s after a call and would stall the threaded AMX
                # kernel that follows (BENCHMARKS.md): let them sleep first
                time.sleep(policy.BLAS_SPIN_SECONDS)
                start = time.perf_counter()
                for layer in layers:
                    for weight in layer:
                        engine.linear(x[weight.shape[0]], weight, None)
                times[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                engine.attention(q, k, v, mask, 0.125)
                times["attention " + name].append(time.perf_counter() - start)
        engine.set_float32_matmul_precision("highest")
        best = {name: min(values[1:]) for name, values in times.items()}
        flops = 2 * m * sum(n_in * n_out for n_in, n_out in SHAPES) * 12
        print(f"| {m} | {best['blas'] * 1e3:.1f} | {best['amx'] * 1e3:.1f} | {flops / best['blas'] / 1e9:.0f} | "
              f"{flops / best['amx'] / 1e9:.0f} | {best['attention blas'] * 1e3:.2f} | "
              f"{best['attention amx'] * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
    main()
