"""`minigpt2 bench`."""

import argparse
import os
import sys


def add_bench_command(subparsers):
    """`minigpt2 bench`: speed and memory of one model, optionally next to transformers."""
    parser = subparsers.add_parser(
        "bench", help="measure prefill and decode speed, start time and memory (one table)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure the numba backend on one model: prefill tokens/s (last-position logits),\n"
                    "decode tokens/s (16-token prompt, greedy, KV cache), Numba compile time, start time\n"
                    "of a fresh process to its first token, load time and RSS. Each configuration runs in\n"
                    "fresh worker processes that take turns, best of --rounds. --model takes a preset name\n"
                    "(a random checkpoint of that shape is written once to ~/.cache/minigpt2/bench/) or a\n"
                    "folder with config.json + model.safetensors. transformers runs in float32.\n"
                    "--matmul-precision medium lets prefill matmuls and attention use bfloat16 products\n"
                    "(AMX tiles, where the CPU has them) in both engines, as torch.set_float32_matmul_precision.",
        epilog="examples:\n"
               "  minigpt2 bench --quick\n"
               "  minigpt2 bench --model gpt2-medium --dtype bfloat16 --compare-transformers\n"
               "  minigpt2 bench --dtype bfloat16 --matmul-precision medium --lengths 512 1024\n"
               "  minigpt2 bench --model gpt2 --batch 8 --dtype int8\n",
    )
    parser.add_argument("--model", default="gpt2", metavar="M",
                        help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 (random weights), or a folder")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "int8"),
                        help="weight storage (compute is float32)")
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="sequences decoded at once")
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high", "medium"),
                        help="'medium': bfloat16 products in prefill (AMX) where the CPU has them")
    parser.add_argument("--compare-transformers", action="store_true",
                        help="also measure transformers (PyTorch, float32) on the same weights")
    parser.add_argument("--numpy", action="store_true", help="also measure the numpy backend")
    parser.add_argument("--quick", action="store_true", help="prefill 128 only, 32 new tokens, one round")
    parser.add_argument("--lengths", type=int, nargs="+", metavar="N", help="prefill lengths (default 128 512 1024)")
    parser.add_argument("--new-tokens", type=int, metavar="N", help="decode steps (default 128)")
    parser.add_argument("--rounds", type=int, metavar="N", help="rounds over all configurations (default 2)")
    parser.add_argument("--threads", type=int, default=2, metavar="N",
                        help="threads for Numba, BLAS and torch (default 2)")

    def run(args):
        from minigpt2 import bench
        from minigpt2.config import PRESETS

        from minigpt2.config import GPT2Config

        if args.batch < 1 or args.threads < 1:
            raise ValueError("--batch and --threads must be at least 1")
        if args.model in PRESETS:
            config = GPT2Config.from_pretrained(args.model)
        elif os.path.isdir(args.model):
            from minigpt2.weights.checkpoints import weight_files

            config = GPT2Config.from_pretrained(args.model)   # here, not as a traceback from every worker
            weight_files(args.model)
        else:
            raise ValueError(f"--model must be one of {sorted(PRESETS)} or a folder, got {args.model!r}")
        lengths = args.lengths or ([128] if args.quick else [128, 512, 1024])
        new_tokens = args.new_tokens if args.new_tokens is not None else (32 if args.quick else 128)
        rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
        check_bench_numbers(lengths, new_tokens, rounds, config.n_positions)   # before any worker starts
        if args.compare_transformers and not bench.transformers_available():
            raise ValueError("--compare-transformers needs torch and transformers installed")
        if args.model in PRESETS:
            folder = bench.write_random_checkpoint(bench.default_folder(args.model), args.model)
        else:
            folder = args.model
        precision = args.matmul_precision
        suffix = "" if precision == "highest" else f", {precision}"
        name = f"numba {args.dtype}{suffix}"
        columns = {name: {"backend": "numba", "folder": str(folder), "dtype": args.dtype, "batch": args.batch,
                          "matmul_precision": precision}}
        if args.numpy:
            columns["numpy float32"] = {"backend": "numpy", "folder": str(folder), "dtype": "float32",
                                        "batch": args.batch}
        transformers_name = f"transformers float32{suffix}"
        if args.compare_transformers:
            columns[transformers_name] = {"backend": "transformers", "folder": str(folder), "dtype": "float32",
                                          "batch": args.batch, "matmul_precision": precision}
        results = bench.run_columns(columns, lengths, new_tokens, rounds=rounds, threads=args.threads,
                                    start_times=True, log=lambda m: print("  " + m, file=sys.stderr, flush=True))
        print(f"{args.model}, batch {args.batch}, {args.threads} threads, best of {rounds} round(s); "
              f"{bench.machine_description()}\n")
        print(bench.format_table(results, lengths, new_tokens, batch=args.batch,
                                 compare=(name, transformers_name) if args.compare_transformers else None))
        if new_tokens and args.model in PRESETS:      # the decode speed no engine can pass on this machine
            streamed = bench.streamed_bytes_per_token(args.model, args.dtype)
            print("\n" + bench.ceiling_line(bench.run_bandwidth(args.threads), {args.dtype: streamed})
                  + " That is per sequence: a batch shares each step's weights.")

    parser.set_defaults(run=run)


def check_bench_numbers(lengths, new_tokens, rounds, n_positions):
    """ValueError unless every prefill length and the decode run fit the model's context and
    there is at least one round (else the table would be empty, or the workers would fail)."""
    from minigpt2.bench import PROMPT_TOKENS

    bad = [n for n in lengths if not 1 <= n <= n_positions]
    if bad:
        raise ValueError(f"--lengths must be between 1 and the model's context {n_positions}, got {bad[0]}")
    if not 0 <= new_tokens <= n_positions - PROMPT_TOKENS:
        raise ValueError(f"--new-tokens must be between 0 and {n_positions - PROMPT_TOKENS} (the context "
                         f"{n_positions} less the {PROMPT_TOKENS}-token prompt), got {new_tokens}")
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
