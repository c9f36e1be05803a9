"""Tokenizer speed: minigpt2 vs tiktoken vs Hugging Face `tokenizers`, measured in one run.

    python benchmarks/bench_tokenizer.py [--text data/tinyshakespeare.txt] [--repeat 3]

Prints MB/s (UTF-8 bytes of text per second) and tokens/s for encode and decode, on the whole
text in one call and line by line (split on "\\n", one call per line), single thread.
"cold" = a freshly built tokenizer (empty caches; construction not timed); "warm" = the same
tokenizer encoding the same text again. tiktoken has no cache; `tokenizers` has an internal one,
so it gets both rows too. Best of --repeat runs. The machine is shared: compare ratios within a run.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")          # tokenizers / tiktoken: one thread
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from minigpt2.tokenizer import GPT2Tokenizer  # noqa: E402
from minigpt2.tokenizer_reference import tiktoken_gpt2, tokenizers_gpt2  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def best_time(run, make_state, repeat):
    """Min over `repeat` runs of run(state); make_state() builds a fresh state, untimed."""
    best, result = float("inf"), None
    for _ in range(repeat):
        state = make_state()
        start = time.perf_counter()
        result = run(state)
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", default=str(REPO / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = Path(args.text).read_text(encoding="utf-8")
    lines = text.split("\n")
    n_bytes = len(text.encode("utf-8"))

    start = time.perf_counter()
    GPT2Tokenizer.from_pretrained("gpt2")
    load_seconds = time.perf_counter() - start
    tiktoken_encoding = tiktoken_gpt2()

    # name -> (fresh tokenizer, encode(tok, text), decode(tok, ids))
    contenders = {
        "minigpt2": (lambda: GPT2Tokenizer.from_pretrained("gpt2"),
                     lambda tok, s: tok.encode(s), lambda tok, ids: tok.decode(ids)),
        "tiktoken": (lambda: tiktoken_encoding,
                     lambda enc, s: enc.encode_ordinary(s), lambda enc, ids: enc.decode(ids)),
        "tokenizers": (tokenizers_gpt2,
                       lambda tok, s: tok.encode(s).ids, lambda tok, ids: tok.decode(ids)),
    }

    rows, reference_ids = [], None
    for name, (make, encode, decode) in contenders.items():
        for mode, inputs in (("whole", [text]), ("lines", lines)):
            def encode_all(tok):
                return [encode(tok, s) for s in inputs]

            cold, ids = best_time(encode_all, make, args.repeat)
            warm_tok = make()
            encode_all(warm_tok)
            warm, _ = best_time(encode_all, lambda: warm_tok, args.repeat)
            decode_time, decoded = best_time(lambda tok: [decode(tok, i) for i in ids], lambda: warm_tok, args.repeat)
            n_tokens = sum(map(len, ids))
            if reference_ids is None or mode == "whole":
                reference_ids = reference_ids or ids
            exact = "yes" if decoded == inputs else "NO"
            for label, seconds in (("encode cold", cold), ("encode warm", warm), ("decode", decode_time)):
                rows.append((name, mode, label, n_bytes / seconds / 1e6, n_tokens / seconds / 1e6, seconds, exact))

    print(f"text: {args.text} ({n_bytes / 1e6:.2f} MB, {len(lines)} lines); best of {args.repeat}; "
          f"minigpt2 load {load_seconds * 1000:.0f} ms")
    print(f"{'tokenizer':<11} {'input':<6} {'step':<12} {'MB/s':>7} {'Mtok/s':>7} {'seconds':>8} "
          f"{'x tokenizers':>12} {'round trip':>10}")
    baseline = {(mode, step): mbps for name, mode, step, mbps, *_ in rows if name == "tokenizers"}
    for name, mode, step, mbps, mtoks, seconds, exact in rows:
        print(f"{name:<11} {mode:<6} {step:<12} {mbps:7.2f} {mtoks:7.3f} {seconds:8.3f} "
              f"{mbps / baseline[mode, step]:12.2f} {exact:>10}")


if __name__ == "__main__":
    main()
