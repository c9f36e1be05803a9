"""What generation adds on top of the model: the logits processors and the sampler per step,
and generate() against a bare greedy decode loop on the same model. Prints tables.

    python benchmarks/bench_generate.py                 # processors only (a few seconds)
    python benchmarks/bench_generate.py --model gpt2    # also generate() vs a bare loop on a random
                                                        # gpt2-sized checkpoint (minigpt2.bench makes it)
"""

import argparse
import time

import numpy as np

from minigpt2.generation_config import GenerationConfig
from minigpt2.processors import make_rng, process_logits, sample_tokens

SETTINGS = [
    ("greedy (argmax)", dict(do_sample=False)),
    ("greedy + repetition_penalty 1.2", dict(do_sample=False, repetition_penalty=1.2)),
    ("sample, top_k 50 (default)", dict(do_sample=True, top_k=50)),
    ("sample, top_k 50, top_p 0.95, T 0.8", dict(do_sample=True, top_k=50, top_p=0.95, temperature=0.8)),
    ("sample, top_p 0.95 only", dict(do_sample=True, top_k=None, top_p=0.95)),
    ("sample, full vocab", dict(do_sample=True, top_k=None)),
]


def time_per_call(function, repeats):
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def processor_table(vocab_size=50257, context=300, repeats=30):
    rng = np.random.default_rng(0)
    # peaked like a language model's next-token scores: a few likely tokens, a long tail
    scores = (rng.standard_normal((1, vocab_size)) * 2.5).astype(np.float32)
    ids = rng.integers(0, vocab_size, size=(1, context))
    sampler = make_rng(0)
    print(f"per-step cost of processors + token choice, vocab {vocab_size}, {context} ids in the row")
    print(f"{'setting':<40} {'ms/step':>8}")
    for name, settings in SETTINGS:
        def step():
            processed = process_logits(scores, ids, GenerationConfig(**settings))
            return sample_tokens(processed, sampler) if settings["do_sample"] else np.argmax(processed, -1)
        print(f"{name:<40} {1000 * time_per_call(step, repeats):>8.2f}")


def loop_table(model_name, new_tokens):
    from minigpt2 import GPT2LMHeadModel, bench
    from minigpt2.generate import generate

    folder = bench.write_random_checkpoint(bench.default_folder(model_name), model=model_name)
    model = GPT2LMHeadModel.from_pretrained(folder)
    prompt = np.arange(16)[None, :] + 1000
    model.generate(prompt, max_new_tokens=2)                     # compile / warm up

    def bare_loop():
        out = model(prompt, use_cache=True, logits_to_keep=1)
        token = np.argmax(out.logits[:, -1], -1)
        for _ in range(new_tokens - 1):
            out = model(token[:, None], past_key_values=out.past_key_values, use_cache=True)
            token = np.argmax(out.logits[:, -1], -1)

    rows = [("bare greedy loop (model calls only)", bare_loop),
            ("generate(), greedy", lambda: generate(model, prompt, max_new_tokens=new_tokens, eos_token_id=None)),
            ("generate(), top_k 50 top_p 0.95 sampling",
             lambda: generate(model, prompt, max_new_tokens=new_tokens, eos_token_id=None, do_sample=True,
                              top_p=0.95, seed=0))]
    print(f"\n{model_name} (random weights), 16-token prompt + {new_tokens} new tokens, batch 1")
    print(f"{'loop':<44} {'s':>7} {'tokens/s':>9}")
    for name, run in rows:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        print(f"{name:<44} {seconds:>7.2f} {new_tokens / seconds:>9.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="also time generate() on a random checkpoint of this preset")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    processor_table()
    if args.model:
        loop_table(args.model, args.new_tokens)


if __name__ == "__main__":
    main()
