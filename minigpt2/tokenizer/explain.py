"""`GPT2Tokenizer.explain(text)`: every step of encoding one text, as data and as a printout.

    >>> print(tok.explain("Hello world"))
    piece 0: 'Hello'  bytes 48 65 6c 6c 6f  symbols H e l l o
      merge rank    8: l + l     -> H e ll o
      ...
      ids [15496]

It uses the readable string form of the merge loop (`bpe.bpe_symbols`), without the
cache or the whole-token shortcut, so every merge shows.
"""

from dataclasses import dataclass, field

from minigpt2.tokenizer.bpe import bpe_symbols
from minigpt2.tokenizer.bytes_unicode import bytes_to_symbols


@dataclass
class MergeStep:
    rank: int            # line of vocab.bpe after the header (lower merges first)
    left: str
    right: str
    symbols: list        # the piece's symbols after this merge

    def __str__(self):
        return f"merge rank {self.rank:5d}: {self.left} + {self.right} -> {' '.join(self.symbols)}"


@dataclass
class PieceExplanation:
    text: str            # the piece as it appears in the input
    start: int           # character offset in the input
    special: bool        # a special token such as <|endoftext|>, not BPE-encoded
    data: bytes          # UTF-8 bytes
    symbols: list        # one byte-to-unicode symbol per byte, before merging
    merges: list = field(default_factory=list)   # MergeStep, in order
    tokens: list = field(default_factory=list)   # final token strings
    ids: list = field(default_factory=list)

    def __str__(self):
        if self.special:
            return f"special {self.text!r} -> id {self.ids[0]}"
        lines = [f"piece {self.text!r} at {self.start}: bytes {self.data.hex(' ')}  "
                 f"symbols {' '.join(self.symbols)}"]
        lines += [f"  {step}" for step in self.merges]
        lines.append(f"  tokens {self.tokens} -> ids {self.ids}")
        return "\n".join(lines)


@dataclass
class Explanation:
    text: str
    pieces: list         # PieceExplanation, in order

    @property
    def ids(self):
        return [i for piece in self.pieces for i in piece.ids]

    @property
    def tokens(self):
        return [t for piece in self.pieces for t in piece.tokens]

    def __str__(self):
        header = f"text {self.text!r}: {len(self.pieces)} pieces, {len(self.ids)} tokens"
        return "\n".join([header] + [str(piece) for piece in self.pieces] + [f"ids {self.ids}"])


def explain(tokenizer, text, allowed_special):
    """Build the Explanation of `tokenizer.encode(text)` for the given set of allowed special tokens."""
    pieces, start = [], 0
    for chunk in tokenizer.split_special(text, allowed_special):
        if chunk in allowed_special:
            pieces.append(PieceExplanation(chunk, start, True, chunk.encode("utf-8"), [chunk],
                                           tokens=[chunk], ids=[tokenizer.encoder[chunk]]))
        else:
            pieces += _explain_ordinary(tokenizer, chunk, start)
        start += len(chunk)
    return Explanation(text, pieces)


def _explain_ordinary(tokenizer, text, base):
    shift = base
    if tokenizer.wants_prefix_space(text):
        text, shift = " " + text, base - 1
    pieces = []
    for match in tokenizer._pretokenize.finditer(text):
        data = match.group().encode("utf-8")
        steps = []
        tokens = bpe_symbols(data, tokenizer.bpe_ranks, steps)
        pieces.append(PieceExplanation(
            match.group(), max(base, match.start() + shift), False, data, list(bytes_to_symbols(data)),
            merges=[MergeStep(*step) for step in steps], tokens=tokens,
            ids=[tokenizer.encoder[t] for t in tokens]))
    return pieces
