"""Lesson 02: the pre-split regex. BPE never merges across the pieces it cuts.

Before any merge, GPT-2 cuts the text into pieces with one regular expression (OpenAI's
encoder.py). Each alternative is tried left to right at the current position:

    's|'t|'re|'ve|'m|'ll|'d     English contractions, case-sensitive ("I'M" is not one)
    | ?\\p{L}+                   a word: letters of any script, with at most one leading space
    | ?\\p{N}+                   a run of digits (any script), with one leading space
    | ?[^\\s\\p{L}\\p{N}]+         punctuation / symbols / emoji, with one leading space
    |\\s+(?!\\S)                  whitespace, but leave the last space for the next word
    |\\s+                        any other whitespace (at the end of the text)

So the space belongs to the word after it (" world"), and "  two" splits as " " + " two".
`\\p{L}` needs the `regex` module: Python's `re` refuses the pattern.

    python -m lessons.l02_pretokenize [--fast]
"""

import re

import regex

from lessons._common import check_equal, parse_args, reference_json, run, skipped, title

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ALTERNATIVES = ["'s|'t|'re|'ve|'m|'ll|'d", r" ?\p{L}+", r" ?\p{N}+", r" ?[^\s\p{L}\p{N}]+", r"\s+(?!\S)", r"\s+"]
NAMES = ["contraction", "letters", "digits", "other", "space*", "space"]

# minGPT's worked example (karpathy/minGPT, mingpt/bpe.py, the __main__ block's printed chunks).
MINGPT_TEXT = "Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗"
MINGPT_PIECES = ['Hello', '!!', ' I', "'m", ' Andrej', ' Karpathy', '.', ' It', "'s", ' 2022', '.',
                 ' w', '00', 't', ' :', 'D', ' 🤗']


def pretokenize(text, pattern=PATTERN):
    """text -> its pieces, in order. The piece this lesson teaches: one findall."""
    return regex.findall(pattern, text)


def which_alternative(piece):
    return next(name for name, alt in zip(NAMES, ALTERNATIVES) if regex.fullmatch(alt, piece))


def main(argv=None):
    args = parse_args(__doc__, argv)
    texts = [MINGPT_TEXT, "I'm here. I'M HERE.", "  two  spaces\tand a tab\r\n", "déjà vu — naïve café",
             "12345 + 678 = 13023"]
    if args.fast:
        texts = texts[:3]

    title("pieces, and which alternative of the pattern took each")
    for text in texts:
        pieces = pretokenize(text)
        print(f"{text!r}")
        print("   " + "  ".join(f"{p!r}:{which_alternative(p)}" for p in pieces))

    title("why the `regex` module")
    try:
        re.compile(PATTERN)
        print("re compiled it (unexpected)")
    except re.error as error:
        print(f"re.compile(PATTERN) -> re.error: {error}")
    ascii_only = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[a-zA-Z]+| ?[0-9]+| ?[^\sa-zA-Z0-9]+|\s+(?!\S)|\s+"""
    print(f"an ASCII-only stand-in splits 'naïve café' as {re.findall(ascii_only, 'naïve café')}")
    print(f"the real pattern splits it as                {pretokenize('naïve café')}")

    title("checks")
    check_equal("minGPT's worked split (karpathy/minGPT mingpt/bpe.py)", pretokenize(MINGPT_TEXT), MINGPT_PIECES)
    check_equal("contractions are case-sensitive: I'm vs I'M", [pretokenize("I'm"), pretokenize("I'M")],
                [["I", "'m"], ["I", "'", "M"]])
    from minigpt2.tokenizer import PRETOKENIZE_PATTERN, GPT2Tokenizer
    check_equal("same pattern as minigpt2.tokenizer", PATTERN, PRETOKENIZE_PATTERN)
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    all_texts = [e["text"] for e in reference_json("tokenizer.json")["texts"] if "<|" not in e["text"]]
    check_equal(f"pieces of {len(all_texts)} texts == minigpt2 explain()'s pieces",
                [pretokenize(t) for t in all_texts],
                [[piece.text for piece in tok.explain(t).pieces] for t in all_texts])
    try:
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:
        skipped("tiktoken is not installed: cannot compare with its spelling of the pattern")
        return 0
    # tiktoken spells the contractions '(?:[sdmt]|ll|ve|re): a different spelling, the same pieces
    check_equal(f"pieces of {len(all_texts)} texts == tiktoken's r50k pattern",
                [pretokenize(t) for t in all_texts], [regex.findall(r50k_pat_str, t) for t in all_texts])
    return 0


if __name__ == "__main__":
    run(main)
