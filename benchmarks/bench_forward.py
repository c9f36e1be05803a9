"""GPT-2 124M forward-pass speed: numpy backend, numba backend and transformers, one table.

Builds a random GPT-2 124M checkpoint with the project's own safetensors writer (once, in
~/.cache/minigpt2/bench/gpt2-random) and measures, side by side in one run, with every backend
in fresh worker processes taking turns (see minigpt2/bench.py):

  * prefill tokens/s at 16/128/512/1024 tokens (batch 1, logits of the last position only),
  * decode tokens/s: a 16-token prompt, then 128 greedy tokens over the KV cache, batch 1,
  * Numba compile time (first process, empty cache) and start time of a fresh process to its
    first token (16-token prompt + one decode step) with the cache warm,
  * peak RSS of each worker,
  * the memory bandwidth of the machine during the run (a 512 MB matrix-vector product, before
    and after the table): decoding streams 494 MB of float32 weights per token, so bandwidth /
    494 MB is the decode speed no engine can pass here; the share of it each backend reaches is
    printed under the table.

    python benchmarks/bench_forward.py            # the full table (a few minutes on 2 cores)
    python benchmarks/bench_forward.py --quick    # 16/128 prefill, 32 new tokens, one round

transformers is included when torch and transformers are installed (--no-transformers skips it).
"""

import argparse
import time

from minigpt2 import bench


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short version: 16/128 prefill, 32 new tokens, 1 round")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="prefill lengths (default 16 128 512 1024)")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode steps (default 128)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all backends, best kept (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of each prefill within a round")
    parser.add_argument("--threads", type=int, default=2, help="threads for Numba, BLAS and torch")
    parser.add_argument("--backends", nargs="+", default=None, choices=bench.BACKENDS)
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--folder", default=None, help="checkpoint folder (default: the bench cache)")
    args = parser.parse_args()

    lengths = args.lengths or ([16, 128] if args.quick else [16, 128, 512, 1024])
    new_tokens = args.new_tokens if args.new_tokens is not None else (32 if args.quick else 128)
    rounds = args.rounds or (1 if args.quick else 2)
    backends = args.backends or ["numpy", "numba", "transformers"]
    if args.no_transformers or not bench.transformers_available():
        backends = [b for b in backends if b != "transformers"]

    folder = args.folder or bench.default_folder("gpt2")
    t0 = time.perf_counter()
    bench.write_random_checkpoint(folder, "gpt2")
    print(f"checkpoint: {folder} ({time.perf_counter() - t0:.1f} s)", flush=True)
    bandwidth = bench.run_bandwidth(args.threads)
    results = bench.run_benchmark(folder, backends, lengths, new_tokens, repeats=args.repeats,
                                  rounds=rounds, threads=args.threads,
                                  log=lambda m: print("  " + m, flush=True))
    after = bench.run_bandwidth(args.threads)            # the machine's bandwidth drifts: keep the best
    bandwidth = {name: max(value, after[name]) for name, value in bandwidth.items()}
    print()
    print(f"GPT-2 124M (random weights), float32, batch 1, {args.threads} threads; "
          f"best of {rounds} round(s). {bench.machine_description()}")
    print()
    print(bench.format_table(results, lengths, new_tokens))
    if new_tokens:
        streamed = bench.streamed_bytes_per_token("gpt2", "float32")
        ceiling = max(bandwidth.values()) / (streamed / 1e9)
        print()
        print(bench.ceiling_line(bandwidth, {"float32": streamed}))
        print("Decode (median step) as a share of that ceiling: " + ", ".join(
            f"{name} {r['decode_median_tok_s'] / ceiling:.0%}" for name, r in results.items()
            if r.get("decode_median_tok_s")) + ".")


if __name__ == "__main__":
    main()
