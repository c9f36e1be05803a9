"""One checkout of minigpt2 measured in this process: the script for before/after comparisons of two commits.

    python benchmarks/bench_before_after.py REPO DTYPE [INT8_COMPUTE]

REPO is a checkout of the commit to measure (a git worktree), DTYPE a storage type (float32,
int8, ...), INT8_COMPUTE "float32" (default) or "int8" (engine.set_int8_compute, where REPO has it).
Prints one JSON line: the seconds from process start to the first token and to the second (the
first decode step, which compiles its own kernels on a cold start), decode tok/s
(1 / the median of 48 steps after a 16-token prompt) and prefill tok/s (512 tokens, best of 3), on
the random GPT-2 124M of minigpt2.bench (written by `python benchmarks/bench_speed.py` or
`minigpt2 bench`). Run the two commits in alternating fresh processes, and with
NUMBA_CACHE_DIR=<an empty folder> for the cold-start figure; compare the runs side by side.
"""

import json
import os
import sys
import time

START = time.perf_counter()


def main():
    repo, dtype = sys.argv[1], sys.argv[2]
    sys.path.insert(0, repo)                                # the checkout under test, not the installed one
    import numpy as np
    from minigpt2 import GPT2LMHeadModel
    if len(sys.argv) > 3:
        from minigpt2 import engine
        engine.set_int8_compute(sys.argv[3])

    model = GPT2LMHeadModel.from_pretrained(os.path.expanduser("~/.cache/minigpt2/bench/gpt2-random"), dtype=dtype)
    rng = np.random.default_rng(0)
    out = model(rng.integers(0, 50257, size=(1, 16)), use_cache=True, logits_to_keep=1)
    first_token_s = time.perf_counter() - START
    cache, token, steps = out.past_key_values, out.logits[:, -1].argmax(-1)[:, None], []
    for _ in range(48):
        t0 = time.perf_counter()
        out = model(token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1)[:, None]
        steps.append(time.perf_counter() - t0)
    prompt, prefill_s = rng.integers(0, 50257, size=(1, 512)), float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        model(prompt, logits_to_keep=1)
        prefill_s = min(prefill_s, time.perf_counter() - t0)
    print(json.dumps({"repo": repo, "dtype": dtype, "first_token_s": round(first_token_s, 2),
                      "second_token_s": round(first_token_s + steps[0], 2),
                      "decode_tok_s": round(1 / float(np.median(steps)), 1),
                      "prefill_512_tok_s": round(512 / prefill_s, 1)}))


if __name__ == "__main__":
    main()
