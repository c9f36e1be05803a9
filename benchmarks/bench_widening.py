"""How fast is the decode kernel's arithmetic, with memory out of the way? Prints one table:
`matvec.matvec_out_in` (the [n_out, n_in] matrix-vector kernel that every packed weight and
the tied LM head go through) on a cache-resident 768x768 matrix, serial build (one core), for
each storage type and 1 / 4 / 8 rows of x: microseconds per product and GFLOP/s.

    python benchmarks/bench_widening.py [--rows 1 4 8] [--repeats 300]

A decode step streams its weights from DRAM, so this is not decode speed: it shows how much
compute each storage type's widening leaves for batched decoding, where the kernel is
compute-bound (BENCHMARKS.md, batched decoding).
"""

import argparse

import numpy as np

from minigpt2 import bench
from minigpt2.engine import matvec
from minigpt2.weights.packed import PackedWeight


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--size", type=int, default=768, help="the square matrix's side")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((args.size, args.size), dtype=np.float32)
    stored = {"float32": (np.ascontiguousarray(weight.T), None)}              # [n_out, n_in]
    for storage in ("bfloat16", "float16", "int8"):
        packed = PackedWeight.pack(weight, storage)
        data = packed.data.view(np.int16) if storage == "float16" else packed.data
        stored[storage] = (data, packed.scale)
    bias = np.zeros(args.size, np.float32)
    ones = np.ones(args.size, np.float32)
    print(f"# {bench.machine_description()}; serial kernel, {args.size}x{args.size} matrix "
          f"(cache-resident), best of {args.repeats} calls in blocks of 10")
    print("| rows | " + " | ".join(f"{name} us | GFLOP/s" for name in stored) + " |")
    print("|---:|" + "---:|---:|" * len(stored))
    for m in args.rows:
        x = rng.standard_normal((m, args.size), dtype=np.float32)
        out = np.empty((m, args.size), np.float32)
        cells = []
        for data, scale in stored.values():
            scale = ones if scale is None else scale

            def ten():
                for _ in range(10):
                    matvec.matvec_out_in[True](x, data, scale, bias, False, out)
            seconds = bench.best_seconds(ten, args.repeats // 10) / 10
            flops = 2 * m * args.size * args.size
            cells.append(f"{seconds * 1e6:.0f} | {flops / seconds / 1e9:.0f}")
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
