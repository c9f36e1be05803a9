"""Lesson 01: bytes to unicode, the alphabet GPT-2's vocabulary is written in.

GPT-2's BPE works on UTF-8 *bytes*, but encoder.json and vocab.bpe are text, and a merge line
is "left right" split on a space. So every byte gets a visible stand-in character:

- the 188 bytes that are printable Latin-1 (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves;
- the 68 others (controls, space, DEL, NBSP, soft hyphen) become chr(256 + n), in byte order:
  space 0x20 -> 'Ġ' (U+0120), newline 0x0A -> 'Ċ' (U+010A), tab -> 'ĉ'.

That is why " the" is the token 'Ġthe'. We rebuild the table, look at it (a figure of the
16 x 16 byte grid), and check it against minigpt2, against the first 256 entries of the real
encoder.json, and against Hugging Face `tokenizers`' ByteLevel alphabet.

    python -m lessons.l01_bytes_to_unicode [--fast] [--figures DIR]
"""

import json

from lessons._common import (check_equal, check_true, figure_path, parse_args, pyplot, run, save,
                             skipped, title)
from minigpt2.tokenizer import PACKAGE_VOCAB_DIR


def bytes_to_unicode():
    """byte (0..255) -> one printable character. The piece this lesson teaches."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}                     # 188 bytes keep their glyph
    shifted = [b for b in range(256) if b not in table]        # 68 bytes, in byte order
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return dict(sorted(table.items()))


def draw_table(table, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 9))
    for b, char in table.items():
        row, col = divmod(b, 16)
        kept = ord(char) == b
        ax.add_patch(plt.Rectangle((col, row), 1, 1, color="#dfe9f5" if kept else "#f7c6a3"))
        ax.text(col + 0.5, row + 0.42, char, ha="center", va="center", fontsize=13)
        ax.text(col + 0.5, row + 0.85, f"{b:02x}", ha="center", va="center", fontsize=6, color="#555")
    ax.set_xlim(0, 16), ax.set_ylim(16, 0), ax.set_aspect("equal")
    ax.set_xticks([i + 0.5 for i in range(16)], [f"_{i:x}" for i in range(16)])
    ax.set_yticks([i + 0.5 for i in range(16)], [f"{i:x}_" for i in range(16)])
    ax.set_title("GPT-2 byte -> unicode: blue = the byte is its own glyph (188), "
                 "orange = shifted to chr(256+n) (68)", fontsize=9)
    save(fig, path)


def main(argv=None):
    args = parse_args(__doc__, argv)
    table = bytes_to_unicode()

    title("the table")
    shifted = {b: c for b, c in table.items() if ord(c) != b}
    print(f"{len(table) - len(shifted)} bytes keep their glyph, {len(shifted)} are shifted")
    print("the shifted ones:", " ".join(f"{b:02x}->{c}" for b, c in list(shifted.items())[:40]), "...")
    for b in (0x20, 0x0A, 0x09, 0x0D, 0xA0, 0xAD, ord("A")):
        print(f"  byte {b:#04x} {bytes([b])!r:8s} -> {table[b]!r} U+{ord(table[b]):04X}")
    word = " naïve\n"
    data = word.encode("utf-8")
    print(f"{word!r}: bytes {data.hex(' ')} -> symbols {''.join(table[b] for b in data)!r}"
          "   ('ï' is two bytes, c3 af -> 'Ã' '¯')")

    path = figure_path(args, "l01_byte_table.png")
    if path:
        draw_table(table, path)

    title("checks")
    from minigpt2.tokenizer.bytes_unicode import BYTE_TO_CHAR
    check_equal("our table == minigpt2.tokenizer.bytes_unicode.BYTE_TO_CHAR", table, dict(sorted(BYTE_TO_CHAR.items())))
    check_equal("published values: ' ' -> 'Ġ', '\\n' -> 'Ċ', '\\t' -> 'ĉ'",
                [table[0x20], table[0x0A], table[0x09]], ["Ġ", "Ċ", "ĉ"])
    encoder = json.loads((PACKAGE_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
    check_equal("encoder.json: 'Ċ' is id 198 (LLMs-from-scratch), 'Ġ' is 220",
                [encoder["Ċ"], encoder["Ġ"]], [198, 220])
    # encoder.json's ids 0..255 are the byte symbols, printable bytes first, then the shifted
    # ones in byte order: exactly the order in which OpenAI's bytes_to_unicode builds the table
    first_256 = sorted(encoder, key=encoder.get)[:256]
    ours_in_vocab_order = [c for b, c in table.items() if ord(c) == b] + list(shifted.values())
    check_equal("first 256 entries of the real encoder.json == our table in build order",
                first_256, ours_in_vocab_order)
    check_true("all 256 bytes round-trip", all(
        bytes([{c: b for b, c in table.items()}[table[b]]]) == bytes([b]) for b in range(256)))
    try:
        from tokenizers.pre_tokenizers import ByteLevel
    except ImportError:
        skipped("Hugging Face `tokenizers` is not installed: no second implementation to compare with")
        return 0
    check_equal("same 256 characters as tokenizers' ByteLevel.alphabet()",
                sorted(ByteLevel.alphabet()), sorted(table.values()))
    return 0


if __name__ == "__main__":
    run(main)
