"""Lesson 03: byte-pair merges, the loop that turns a piece into tokens.

Each piece from lesson 02 becomes its UTF-8 bytes, one symbol per byte (lesson 01's alphabet).
Then, over and over: look at every adjacent pair, pick the pair with the *lowest rank* (its line
number in vocab.bpe: the merges the BPE training found first), and merge every occurrence of it,
left to right. Stop when no adjacent pair is in vocab.bpe. Each final symbol is a key of
encoder.json, whose value is the token id.

`GPT2Tokenizer.explain(text)` shows the same work; the figure draws the merge trace of one word.
The package's copy of this loop is `minigpt2.tokenizer.bpe.bpe_symbols(data, ranks)`.

    python -m lessons.l03_bpe_merge [--fast] [--figures DIR]
"""

import json

from lessons._common import (check_equal, figure_path, parse_args, pyplot, reference_json, run, save,
                             title)
from lessons.l01_bytes_to_unicode import bytes_to_unicode
from lessons.l02_pretokenize import pretokenize
from minigpt2.tokenizer import PACKAGE_VOCAB_DIR

BYTE_TO_CHAR = bytes_to_unicode()
ENCODER = json.loads((PACKAGE_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
MERGES = (PACKAGE_VOCAB_DIR / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
RANKS = {tuple(line.split(" ")): rank for rank, line in enumerate(MERGES)}     # (left, right) -> rank

# Published ids: minGPT's worked example (mingpt/bpe.py), transformers' GPT2Tokenizer docstring,
# LLMs-from-scratch's tokenizer tests, and transformers issue #21119.
PUBLISHED = {
    "Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗": [15496, 3228, 314, 1101, 10948, 73, 509, 5117,
                                                       10036, 13, 632, 338, 33160, 13, 266, 405, 83,
                                                       1058, 35, 12520, 97, 245],
    "Hello world": [15496, 995],
    " Hello world": [18435, 995],
    "Hello,": [15496, 11],
    "Implementations": [3546, 26908, 602],
    "Hello, world. Is this-- a test?": [15496, 11, 995, 13, 1148, 428, 438, 257, 1332, 30],
    "y is ?": [88, 318, 5633],
}


def bpe(piece, trace=None):
    """One piece -> its token strings. The piece this lesson teaches."""
    symbols = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]         # one symbol per byte
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda pair: RANKS.get(pair, float("inf")))   # lowest rank wins
        if best not in RANKS:
            break                                                      # nothing left to merge
        merged, i = [], 0
        while i < len(symbols):                                        # merge every occurrence
            if symbols[i:i + 2] == list(best):
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
        if trace is not None:
            trace.append((RANKS[best], list(symbols)))
    return symbols


def encode(text):
    """text -> ids: pre-split (lesson 02), then BPE each piece, then look the strings up."""
    return [ENCODER[token] for piece in pretokenize(text) for token in bpe(piece)]


def draw_trace(piece, trace, path):
    plt = pyplot()
    start = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]
    rows = [(None, start)] + trace
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(start), 0.5 + 0.45 * len(rows)))
    for r, (rank, symbols) in enumerate(rows):
        x = 0
        for symbol in symbols:
            ax.add_patch(plt.Rectangle((x + 0.05, r + 0.1), len(symbol) - 0.1, 0.8, color="#dfe9f5"))
            ax.text(x + len(symbol) / 2, r + 0.5, symbol, ha="center", va="center", fontsize=10)
            x += len(symbol)
        ax.text(-0.3, r + 0.5, "bytes" if rank is None else f"rank {rank}", ha="right", va="center",
                fontsize=8)
    ax.set_xlim(-3, len(start)), ax.set_ylim(len(rows), 0), ax.axis("off")
    ax.set_title(f"BPE merges of {piece!r}: lowest-rank pair first; final ids "
                 f"{[ENCODER[t] for t in rows[-1][1]]}", fontsize=9)
    save(fig, path)


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("the merge loop on one piece")
    piece = " Implementations" if not args.fast else " tokens"
    trace = []
    tokens = bpe(piece, trace)
    print(f"{piece!r} -> bytes {piece.encode('utf-8').hex(' ')}")
    for rank, symbols in trace:
        print(f"  merge rank {rank:5d} -> {symbols}")
    print(f"  tokens {tokens} -> ids {[ENCODER[t] for t in tokens]}")
    path = figure_path(args, "l03_merge_trace.png")
    if path:
        draw_trace(piece, trace, path)

    title("an emoji: 4 bytes, only partly merged; tokens need not be whole characters")
    print(f"' 🤗' -> {bpe(' 🤗')} -> ids {[ENCODER[t] for t in bpe(' 🤗')]}")

    title("minigpt2's explain() shows the same work")
    from minigpt2.tokenizer import GPT2Tokenizer
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    print(tok.explain("Hello world"))

    title("checks")
    for text, ids in PUBLISHED.items():
        check_equal(f"{text!r} -> published ids", encode(text), ids)
    entries = [e for e in reference_json("tokenizer.json")["texts"] if "<|" not in e["text"]]
    check_equal(f"{len(entries)} texts == tiktoken (lessons/references/tokenizer.json)",
                [encode(e["text"]) for e in entries], [e["ordinary"] for e in entries])
    check_equal(f"{len(entries)} texts == minigpt2 GPT2Tokenizer.encode",
                [encode(e["text"]) for e in entries], [tok.encode(e["text"]) for e in entries])
    from minigpt2.tokenizer.bpe import bpe_symbols
    pieces = [piece for e in entries for piece in pretokenize(e["text"])]
    check_equal(f"bpe() on {len(pieces)} pieces == minigpt2.tokenizer.bpe.bpe_symbols", [bpe(p) for p in pieces],
                [bpe_symbols(p.encode("utf-8"), RANKS) for p in pieces])
    check_equal("merge trace == explain()'s merges", [(r, s) for r, s in trace],
                [(step.rank, step.symbols) for p in tok.explain(piece).pieces for step in p.merges])
    return 0


if __name__ == "__main__":
    run(main)
