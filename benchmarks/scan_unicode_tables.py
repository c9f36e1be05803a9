"""Do minigpt2 (the `regex` package) and the references agree on every code point's class?

GPT-2's pre-split pattern depends on Unicode tables: \\p{L} (letters), \\p{N} (numbers) and \\s.
minigpt2 uses the `regex` package's tables, tiktoken those of Rust's regex crate, `tokenizers`
those of Oniguruma. They can disagree on code points added in recent Unicode versions.

    python benchmarks/scan_unicode_tables.py            # every code point vs tiktoken (~1 min)
    python benchmarks/scan_unicode_tables.py --recent   # only code points newer than Python's own
                                                        # Unicode tables, vs tiktoken and tokenizers

Each code point c is probed inside "a{c}a 1{c}1 !{c}! {c}\\n{c} {c}", whose split changes if c's
class differs; blocks of 512 code points are compared at once and narrowed down on a mismatch.
Prints the count and the first differing code points.
"""

import argparse
import sys
import unicodedata

import regex

from minigpt2.tokenizer import GPT2Tokenizer
from minigpt2.tokenizer.reference import tiktoken_gpt2, tokenizers_gpt2


def probe(code_point):
    c = chr(code_point)
    return f"a{c}a 1{c}1 !{c}! {c}\n{c} {c}"


def differing(code_points, ours, reference, block=512):
    found = []
    for start in range(0, len(code_points), block):
        chunk = code_points[start:start + block]
        text = "|".join(map(probe, chunk))
        if ours(text) != reference(text):
            found += [c for c in chunk if ours(probe(c)) != reference(probe(c))]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recent", action="store_true",
                        help="only letters/numbers/spaces that Python's unicodedata does not know yet")
    args = parser.parse_args()
    all_code_points = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    if args.recent:
        code_points = [c for c in all_code_points if unicodedata.category(chr(c)) == "Cn"
                       and regex.match(r"[\p{L}\p{N}\s]", chr(c))]
    else:
        code_points = all_code_points
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    references = {"tiktoken": tiktoken_gpt2().encode_ordinary}
    if args.recent:
        hf = tokenizers_gpt2()
        references["tokenizers"] = lambda text: hf.encode(text).ids
    import tiktoken
    import tokenizers
    print(f"regex {regex.__version__}, tiktoken {tiktoken.__version__}, tokenizers {tokenizers.__version__}, "
          f"Python unicodedata {unicodedata.unidata_version}; {len(code_points)} code points")
    for name, reference in references.items():
        found = differing(code_points, tok.encode_ordinary, reference)
        print(f"{name:<11} {len(found)} differ", " ".join(
            f"U+{c:04X} {unicodedata.name(chr(c), '(new)')}" for c in found[:20]))


if __name__ == "__main__":
    main()
