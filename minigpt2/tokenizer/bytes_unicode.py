"""GPT-2's byte <-> unicode table: every byte gets a visible, non-space character.

Byte-level BPE works on the UTF-8 bytes of the text, but the vocabulary files are text
(JSON keys, lines of `vocab.bpe`), and a merge line is two symbols separated by a space.
So OpenAI gave each of the 256 bytes a printable stand-in character:

- the 188 bytes that are already printable Latin-1 characters (`!`..`~`, `¡`..`¬`, `®`..`ÿ`)
  stand for themselves;
- the other 68 (control characters, space, DEL, NBSP, soft hyphen, ...) get `chr(256 + n)`,
  numbered in byte order: space (0x20) -> 'Ġ' (U+0120), newline (0x0A) -> 'Ċ', tab -> 'ĉ'.

That is why GPT-2 tokens look like 'Ġthe' (" the") and 'Ċ' ("\\n") in encoder.json.
"""

# The printable bytes that keep their own character.
_PRINTABLE_BYTES = (
    list(range(ord("!"), ord("~") + 1))      # 0x21..0x7E  ASCII without space and DEL
    + list(range(ord("¡"), ord("¬") + 1))    # 0xA1..0xAC
    + list(range(ord("®"), ord("ÿ") + 1))    # 0xAE..0xFF  (0xAD, the soft hyphen, is invisible)
)


def bytes_to_unicode():
    """Return the dict byte value (0..255) -> its one-character stand-in."""
    byte_to_char = {byte: chr(byte) for byte in _PRINTABLE_BYTES}
    n_shifted = 0
    for byte in range(256):
        if byte not in byte_to_char:
            byte_to_char[byte] = chr(256 + n_shifted)   # the n-th non-printable byte
            n_shifted += 1
    return byte_to_char


BYTE_TO_CHAR = bytes_to_unicode()                                  # 256 entries
CHAR_TO_BYTE = {char: byte for byte, char in BYTE_TO_CHAR.items()}


# str.translate tables, so that converting the 50,257 vocabulary strings at load time is fast.
_SYMBOL_TO_LATIN1 = str.maketrans({char: chr(byte) for byte, char in BYTE_TO_CHAR.items()})
_LATIN1_TO_SYMBOL = str.maketrans({chr(byte): char for byte, char in BYTE_TO_CHAR.items()})
_ALPHABET = frozenset(CHAR_TO_BYTE)


def bytes_to_symbols(data):
    """b' hi' -> 'Ġhi': the vocabulary spelling of some bytes."""
    return data.decode("latin-1").translate(_LATIN1_TO_SYMBOL)   # latin-1: byte n -> chr(n)


def is_symbol_string(token):
    """True if every character of `token` is one of the 256 byte stand-ins: 'Ġhi' yes, '<my token>' no."""
    return _ALPHABET.issuperset(token)


def symbols_to_bytes(symbols):
    """'Ġhi' -> b' hi': the bytes a vocabulary string stands for."""
    if not _ALPHABET.issuperset(symbols):
        bad = next(char for char in symbols if char not in _ALPHABET)
        raise ValueError(f"token string {symbols!r} contains {bad!r}, which is not in GPT-2's "
                         "byte-to-unicode alphabet")
    return symbols.translate(_SYMBOL_TO_LATIN1).encode("latin-1")


def surrogate_error(text):
    """The ValueError for a str holding a lone surrogate (e.g. from bytes decoded with
    errors="surrogateescape"): it has no UTF-8 bytes, so it has no tokens."""
    surrogate = next(char for char in text if "\ud800" <= char <= "\udfff")
    return ValueError(f"text holds a lone surrogate {surrogate!r}, which is not valid Unicode and has no "
                      "UTF-8 bytes to tokenize; decode the source bytes with errors='replace' first")
