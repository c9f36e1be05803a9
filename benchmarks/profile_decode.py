"""Where does a decode step's time go? GPT-2 124M (random weights), numba backend, batch 1 (or
--batch rows decoded together).

Times every kernel call of a greedy decode (16-token prompt, then --steps tokens) by wrapping
the functions model.py calls, and prints one table per weight variant: milliseconds per step in
each op, the GB/s the matrix-vector products reach, and the rest (Python, NumPy glue). Variants:
the memory-mapped float32 checkpoint, the same weights copied into ordinary (anonymous) memory,
that copy with the block matrices stored [n_out, n_in] (the other decode kernel), and bfloat16 /
int8 packed weights.

    python benchmarks/profile_decode.py [--steps 64] [--threads 2] [--batch 1] [--variants mmap copy bfloat16 int8]
"""

import argparse
import collections
import time

import numpy as np

from minigpt2 import bench, engine
from minigpt2.config import GPT2Config
from minigpt2.model import GPT2LMHeadModel
from minigpt2.quantize import convert_model
from minigpt2.weights.packed import PackedWeight
from minigpt2.weights.safetensors import load_file


def load(variant, folder):
    config = GPT2Config.from_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    if variant in ("copy", "transposed"):
        weights = {name: np.array(array) for name, array in weights.items()}
    if variant == "transposed":          # the four block matrices as [n_out, n_in] in memory, seen as .T
        weights = {name: np.ascontiguousarray(array.T).T if name.endswith("mlp.c_fc.weight") or
                   name.endswith("c_proj.weight") or name.endswith("c_attn.weight") else array
                   for name, array in weights.items()}
    model = GPT2LMHeadModel(config, weights, backend="numba")
    return convert_model(model, variant) if variant in ("bfloat16", "float16", "int8") else model


def profile(model, steps, batch=1):
    """Run the decode (batch rows) with every kernel wrapped by a timer; returns ({op: seconds},
    {op: bytes streamed}, total seconds)."""
    spent = collections.defaultdict(float)
    streamed = collections.defaultdict(float)
    originals = {name: getattr(engine, name) for name in ("layer_norm", "linear", "linear_gelu", "attention")}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            key = name
            if name.startswith("linear"):
                weight = args[1]
                key = f"{name} {weight.shape[0]}x{weight.shape[1]}"
                streamed[key] += weight.nbytes if not isinstance(weight, PackedWeight) else weight.nbytes
            spent[key] += time.perf_counter() - start
            return result
        return wrapper

    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, size=(batch, bench.PROMPT_TOKENS))
    out = model(ids, use_cache=True, logits_to_keep=1)
    for _ in range(4):                                            # warm up (and compile)
        out = model(out.logits[:, -1].argmax(-1)[:, None], past_key_values=out.past_key_values, use_cache=True)
    for name, function in originals.items():
        setattr(engine, name, timed(name, function))
    # the blocks hold the module, so patching its attributes reaches them
    try:
        start = time.perf_counter()
        for _ in range(steps):
            out = model(out.logits[:, -1].argmax(-1)[:, None], past_key_values=out.past_key_values, use_cache=True)
        total = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(engine, name, function)
    return spent, streamed, total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["mmap", "copy", "bfloat16", "int8"])
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded together (rows per step)")
    args = parser.parse_args()
    engine.set_num_threads(args.threads)
    folder = bench.write_random_checkpoint(bench.default_folder("gpt2"), "gpt2")
    print(f"# {bench.machine_description()}; {args.threads} threads; {args.steps} decode steps of "
          f"{args.batch} row(s)\n")
    for variant in args.variants:
        model = load(variant, folder)
        spent, streamed, total = profile(model, args.steps, args.batch)
        per_step = total / args.steps
        print(f"## {variant}: {args.batch / per_step:.1f} tok/s (all rows), {per_step * 1e3:.2f} ms/step\n")
        print("| op | ms/step | share | GB/s |")
        print("|---|---:|---:|---:|")
        for key, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            gbps = f"{streamed[key] / seconds / 1e9:.1f}" if key in streamed else ""
            print(f"| {key} | {seconds / args.steps * 1e3:.2f} | {seconds / total:.0%} | {gbps} |")
        rest = total - sum(spent.values())
        print(f"| rest (model.py glue, KV cache, embedding, argmax) | {rest / args.steps * 1e3:.2f} | "
              f"{rest / total:.0%} | |\n", flush=True)


if __name__ == "__main__":
    main()
