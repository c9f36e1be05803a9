"""Where does a prefill's time go? GPT-2 124M (random weights), numba backend, batch 1.

Times every kernel call of one prefill (logits of the last position only) by wrapping the
functions model.py calls, best of three runs, and prints milliseconds per op; the rest is
model.py's glue (head split/merge copies, residual adds, embedding).

    python benchmarks/profile_prefill.py [--tokens 512] [--threads 2] [--dtype float32]
                                         [--matmul-precision highest]

--dtype stores the weights as bfloat16 / float16 / int8 (quantize.py); --matmul-precision medium
lets the matmuls run in bfloat16 on AMX tiles where the CPU has them (amx.py).
"""

import argparse
import collections
import time

import numpy as np

from minigpt2 import bench, engine
from minigpt2.engine import amx
from minigpt2.model import GPT2LMHeadModel

OPS = ("layer_norm", "linear", "linear_gelu", "attention")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "int8"))
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high", "medium"))
    args = parser.parse_args()
    engine.set_num_threads(args.threads)
    engine.set_float32_matmul_precision(args.matmul_precision)
    model = GPT2LMHeadModel.from_pretrained(bench.write_random_checkpoint(bench.default_folder("gpt2"), "gpt2"),
                                            dtype=args.dtype)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(1, args.tokens))
    model(ids, logits_to_keep=1)                                   # compile / warm up
    spent = collections.defaultdict(float)
    originals = {name: getattr(engine, name) for name in OPS}

    def timed(name, function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            result = function(*a, **k)
            spent[name] += time.perf_counter() - start
            return result
        return wrapper

    best_total, best_spent = float("inf"), {}
    for name, function in originals.items():          # the blocks hold the module: patching reaches them
        setattr(engine, name, timed(name, function))
    try:
        for _ in range(3):
            spent.clear()
            start = time.perf_counter()
            model(ids, logits_to_keep=1)
            total = time.perf_counter() - start
            if total < best_total:
                best_total, best_spent = total, dict(spent)
    finally:
        for name, function in originals.items():
            setattr(engine, name, function)
    print(f"# {bench.machine_description()}; {args.threads} threads; {args.dtype} weights, matmul precision "
          f"{args.matmul_precision}; {args.tokens} tokens: "
          f"{best_total * 1e3:.0f} ms, {args.tokens / best_total:.0f} tok/s\n")
    print("| op | ms | share |")
    print("|---|---:|---:|")
    for name, seconds in sorted(best_spent.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / best_total:.0%} |")
    rest = best_total - sum(best_spent.values())
    print(f"| rest (model.py glue) | {rest * 1e3:.1f} | {rest / best_total:.0%} |")


if __name__ == "__main__":
    main()
