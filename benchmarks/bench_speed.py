"""Issue 8's tables: weight storage types, batched decoding, and the five GPT-2 sizes.

Random checkpoints of the official shapes (minigpt2.bench.write_random_checkpoint, the project's
own writer, kept in ~/.cache/minigpt2/bench/) are measured in fresh worker processes that take
turns, so the numbers in one table are measured side by side:

  dtypes  GPT-2 124M, numba backend with float32 / bfloat16 / float16 / int8 weights (float32
          compute) and transformers float32: prefill 512/1024 tok/s, decode tok/s (batch 1),
          load time, RSS; plus the weight bytes streamed per token and the GB/s that implies.
  batch   GPT-2 124M decode throughput (all rows' tokens/s) at batch 1, 2, 4, 8, 16
          (--batch-matmul-precision medium: with bfloat16 products where amx.py takes them).
  sizes   every preset (distilgpt2 ... gpt2-xl): load time, RSS, decode tok/s and GB/s, float32
          and bfloat16.
  prefill GPT-2 124M prefill tok/s at 128 / 512 / 1024 tokens: numba with float32, bfloat16 and
          int8 weights, each with matmul precision "highest" (float32 products) and "medium"
          (bfloat16 products on AMX tiles where the CPU has them, minigpt2.engine.amx), against
          transformers in float32 and in bfloat16; then each column / transformers float32.

    python benchmarks/bench_speed.py                       # all three tables
    python benchmarks/bench_speed.py --tables dtypes batch --quick
    python benchmarks/bench_speed.py --tables sizes --sizes gpt2 gpt2-medium
    python benchmarks/bench_speed.py --tables llama --llama-bench /tmp/llamacpp-anchor

  llama   the speed peer: GPT-2 124M decode (16-token context) and prefill 512 / 1024, numba float32 /
          float16 / bfloat16 / int8 next to llama.cpp f32 / f16 / bf16 / q8_0 on the same weights,
          interleaved round by round, with the ratio of each pair. Needs llama.cpp's llama-bench and
          the GGUF files that `bash ../shared/tools/llamacpp-anchor.sh ~/.cache/minigpt2/bench/gpt2-random
          OUT` builds: --llama-bench OUT (or LLAMA_BENCH=OUT).

gpt2-xl needs 6.2 GB of disk for its random float32 checkpoint (written once) and about 7 GB of RAM.
"""

import argparse
import os
import time

from minigpt2 import bench

SIZES = ["distilgpt2", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]


def spec(model, backend="numba", dtype="float32", batch=1, matmul_precision="highest"):
    return {"backend": backend, "folder": str(bench.default_folder(model)), "dtype": dtype, "batch": batch,
            "matmul_precision": matmul_precision}


def dtypes_table(args, log):
    dtypes = ["float32", "bfloat16", "float16", "int8"]
    columns = {f"numba {d}": spec("gpt2", dtype=d) for d in dtypes}
    if not args.no_transformers and bench.transformers_available():
        columns["transformers float32"] = spec("gpt2", backend="transformers")
    lengths = [512] if args.quick else [512, 1024]
    bandwidth = bench.run_bandwidth(args.threads)
    results = bench.run_columns(columns, lengths, args.new_tokens, repeats=args.repeats, rounds=args.rounds,
                                threads=args.threads, log=log)
    after = bench.run_bandwidth(args.threads)              # the machine's bandwidth drifts: keep the best
    bandwidth = {name: max(value, after[name]) for name, value in bandwidth.items()}
    best = max(bandwidth.values())
    for label, d in zip(columns, dtypes):        # from the median step
        streamed = bench.streamed_bytes_per_token("gpt2", d)
        results[label]["gbps"] = results[label]["decode_median_tok_s"] * streamed / 1e9
        results[label]["ceiling_share"] = results[label]["gbps"] / best
    compare = ("numba float32", "transformers float32") if "transformers float32" in results else None
    table = bench.format_table(results, lengths, args.new_tokens, compare=compare)
    tail = " | |" if compare else " |"
    gbps = "| weight GB/s streamed in decode (median step) | " + " | ".join(
        f"{results[label]['gbps']:.1f}" if "gbps" in results[label] else "–" for label in results) + tail
    share = "| share of the memory-bandwidth ceiling (median step) | " + " | ".join(
        f"{results[label]['ceiling_share']:.0%}" if "gbps" in results[label] else "–" for label in results) + tail
    ceiling = bench.ceiling_line(bandwidth, {d: bench.streamed_bytes_per_token("gpt2", d) for d in dtypes})
    return table + "\n" + gbps + "\n" + share + "\n\n" + ceiling


def batch_table(args, log):
    batches = [1, 2, 4, 8] if args.quick else [1, 2, 4, 8, 16]
    rows = []
    for dtype in args.batch_dtypes:
        columns = {f"batch {b}": spec("gpt2", dtype=dtype, batch=b, matmul_precision=args.batch_matmul_precision)
                   for b in batches}
        results = bench.run_columns(columns, [], args.new_tokens, repeats=args.repeats, rounds=args.rounds,
                                    threads=args.threads, log=log)
        base = results["batch 1"]
        for b in batches:
            r = results[f"batch {b}"]
            rows.append(f"| {dtype} | {b} | {r['decode_tok_s']:.1f} | {r['decode_tok_s'] / base['decode_tok_s']:.2f}x | "
                        f"{r['decode_median_tok_s']:.1f} | "
                        f"{r['decode_median_tok_s'] / base['decode_median_tok_s']:.2f}x | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(["| weights | batch | decode tok/s (all rows) | vs batch 1 | median step: tok/s | vs batch 1 "
                      "| peak RSS (MB) |", "|---|---:|---:|---:|---:|---:|---:|"] + rows)


def sizes_table(args, log):
    rows = []
    for model in args.sizes:
        t0 = time.perf_counter()
        bench.write_random_checkpoint(bench.default_folder(model), model)
        log(f"{model}: checkpoint ready ({time.perf_counter() - t0:.0f} s)")
        columns = {d: spec(model, dtype=d) for d in args.size_dtypes}
        new_tokens = max(8, args.new_tokens // (4 if model in ("gpt2-large", "gpt2-xl") else 1))
        results = bench.run_columns(columns, [], new_tokens, repeats=2, rounds=1, threads=args.threads, log=log)
        for d in args.size_dtypes:
            r = results[d]
            gbps = r["decode_median_tok_s"] * bench.streamed_bytes_per_token(model, d) / 1e9
            rows.append(f"| {model} | {d} | {r['load_s']:.2f} | {r['rss_after_load_mb']:,.0f} | "
                        f"{r['peak_rss_mb']:,.0f} | {r['decode_tok_s']:.1f} | {r['decode_median_tok_s']:.1f} | "
                        f"{gbps:.1f} |")
    return "\n".join(["| model | weights | load (s) | RSS after load (MB) | peak RSS (MB) | decode tok/s | "
                      "median step: tok/s | GB/s (median step) |", "|---|---|---:|---:|---:|---:|---:|---:|"] + rows)


def prefill_table(args, log):
    columns = {}
    for dtype in ("float32", "bfloat16", "int8"):
        columns[f"numba {dtype}"] = spec("gpt2", dtype=dtype)
        columns[f"numba {dtype}, medium"] = spec("gpt2", dtype=dtype, matmul_precision="medium")
    if not args.no_transformers and bench.transformers_available():
        for dtype in ("float32", "bfloat16"):
            columns[f"transformers {dtype}"] = spec("gpt2", backend="transformers", dtype=dtype)
    lengths = [512] if args.quick else [128, 512, 1024]
    results = bench.run_columns(columns, lengths, 0, repeats=args.repeats, rounds=args.rounds,
                                threads=args.threads, log=log)
    table = bench.format_table(results, lengths, 0, compare=None)
    if "transformers float32" not in results:
        return table
    reference = results["transformers float32"]["prefill_tok_s"]
    ratios = [f"| prefill {n}: / transformers float32 | " + " | ".join(
        f"{results[label]['prefill_tok_s'][str(n)] / reference[str(n)]:.2f}x" for label in results) + " |"
        for n in lengths]
    return "\n".join([table] + ratios)


LLAMA_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int8": "q8_0"}


def llama_table(args, log):
    """Ours and llama.cpp's, storage type by storage type, in alternating rounds."""
    if not args.llama_bench:
        raise SystemExit("--tables llama needs --llama-bench OUT (or LLAMA_BENCH=OUT): the folder that "
                         "../shared/tools/llamacpp-anchor.sh writes")
    binary = os.path.join(args.llama_bench, "bin", "llama-bench")
    name = bench.default_folder("gpt2").name
    columns = {}
    for dtype, ggml_type in LLAMA_TYPES.items():
        columns[f"numba {dtype}"] = spec("gpt2", dtype=dtype)
        columns[f"llama.cpp {ggml_type}"] = {"backend": "llama.cpp", "llama_bench": binary,
                                            "gguf": os.path.join(args.llama_bench, "gguf", f"{name}-{ggml_type}.gguf")}
    lengths = [512] if args.quick else [512, 1024]
    results = bench.run_columns(columns, lengths, args.new_tokens, repeats=args.repeats, rounds=args.rounds,
                                threads=args.threads, log=log)
    bandwidth = bench.run_bandwidth(args.threads)
    rows = ["| weights | prefill 512: ours / llama.cpp (tok/s) | ratio | " +
            ("prefill 1024: ours / llama.cpp | ratio | " if 1024 in lengths else "") +
            "decode, median step: ours / llama.cpp (tok/s) | ratio | decode ceiling (tok/s) |",
            "|---|---:|---:|" + ("---:|---:|" if 1024 in lengths else "") + "---:|---:|---:|"]
    for dtype, ggml_type in LLAMA_TYPES.items():
        ours, theirs = results[f"numba {dtype}"], results[f"llama.cpp {ggml_type}"]
        cells = []
        for n in lengths:
            a, b = ours["prefill_tok_s"][str(n)], theirs["prefill_tok_s"][str(n)]
            cells += [f"{a:,.0f} / {b:,.0f}", f"{a / b:.2f}x"]
        a, b = ours["decode_median_tok_s"], theirs["decode_median_tok_s"]
        ceiling = max(bandwidth.values()) * 1e9 / bench.streamed_bytes_per_token("gpt2", dtype)
        cells += [f"{a:.1f} / {b:.1f}", f"{a / b:.2f}x", f"{ceiling:.0f}"]
        rows.append(f"| {dtype} / {ggml_type} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\n" + bench.ceiling_line(
        bandwidth, {d: bench.streamed_bytes_per_token("gpt2", d) for d in LLAMA_TYPES})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=["dtypes", "batch", "sizes", "prefill"],
                        choices=["dtypes", "batch", "sizes", "prefill", "llama"])
    parser.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"),
                        help="the llamacpp-anchor.sh output folder (bin/llama-bench, gguf/): the llama table")
    parser.add_argument("--quick", action="store_true", help="fewer lengths, batches and tokens; one round")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode steps (default 128, quick 32)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=SIZES, choices=SIZES)
    parser.add_argument("--size-dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batch-dtypes", nargs="+", default=["float32"])
    parser.add_argument("--batch-matmul-precision", default="highest", choices=("highest", "high", "medium"),
                        help="the batch table's matmul precision (medium: batches of 16+ over bfloat16 on AMX)")
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    args.new_tokens = args.new_tokens or (32 if args.quick else 128)
    args.rounds = args.rounds or (1 if args.quick else 2)

    def log(message):
        print("  " + message, flush=True)

    bench.write_random_checkpoint(bench.default_folder("gpt2"), "gpt2")
    print(f"# {bench.machine_description()}; {args.threads} threads; best of {args.rounds} round(s)\n", flush=True)
    for name in args.tables:
        table = {"dtypes": dtypes_table, "batch": batch_table, "sizes": sizes_table,
                 "prefill": prefill_table, "llama": llama_table}[name](args, log)
        print(f"\n## {name}\n\n{table}\n", flush=True)


if __name__ == "__main__":
    main()
