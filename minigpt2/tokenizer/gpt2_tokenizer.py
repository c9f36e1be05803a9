"""GPT2Tokenizer: text <-> token ids with OpenAI's byte-level BPE, exactly.

Encoding one text takes four steps, each a small piece of this file:

1. split off special tokens such as "<|endoftext|>" (only those allowed, see `encode`);
2. pre-split the rest into pieces with GPT-2's regex (`PRETOKENIZE_PATTERN`, needs `regex`);
3. turn each piece into its UTF-8 bytes, one token per byte to start with;
4. apply merges, lowest rank first, until no adjacent pair has a merge (`bpe.bpe_ids`).

Step 4 runs once per distinct piece: results sit in a bounded LRU cache, and a piece that
is itself a vocabulary entry (" the", "Hello") is looked up directly, as tiktoken does
(for GPT-2's own merges, where that is proven by the tests).
Steps 2-4 also run once per distinct word-sized chunk (`CHUNK_BOUNDARY_PATTERN`), so text
made of words seen before costs one split and one cache lookup per word. Chunks and pieces
longer than CACHED_CHARS are never cached, so the caches stay small in bytes, not only in entries.
`explain(text)` shows every step with the readable string version of the merge loop
(`bpe.bpe_symbols`), which the tests hold equal to the fast id version.

The merge loops are in bpe.py, the files in files.py, and `tok(...)` (batches, pairs,
truncation, padding) in encode_call.py; this file is the class that joins them.
"""

import functools
import operator
import re
from itertools import chain

import regex

from minigpt2.tokenizer import bpe
from minigpt2.tokenizer.batch_encoding import pad_and_stack
from minigpt2.tokenizer.bytes_unicode import BYTE_TO_CHAR, is_symbol_string, surrogate_error, symbols_to_bytes
from minigpt2.tokenizer.encode_call import check_positive_int, encode_call, truncate
from minigpt2.tokenizer.explain import explain
from minigpt2.tokenizer.files import (PACKAGE_VOCAB_DIR, find_vocab_files, is_gpt2_merges, load_merges,
                                      load_vocab, read_tokenizer_config, tokenizer_folder,
                                      write_tokenizer_config, write_vocabulary)

# OpenAI's pattern (openai/gpt-2 src/encoder.py). The contractions are case-sensitive (OpenAI's
# comment: "Should have added re.IGNORECASE"): "I'm" -> "I", "'m" but "I'M" -> "I", "'", "M".
PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same pattern for ASCII-only text, where \p{L} is [A-Za-z], \p{N} is [0-9] and \s is
# [\t\n\v\f\r ] (re.ASCII): the standard library's `re` runs it with less overhead per call.
ASCII_PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"
# A speed-up that changes nothing: the pattern always starts a new piece at a space followed by
# a non-space (" ?\p{L}+", " ?\p{N}+" or " ?[^\s\p{L}\p{N}]+" takes it, and no earlier piece can
# hold that space). So we may first cut the text there, into word-sized chunks, and pre-split
# and cache each chunk on its own.
# The standard library's `re` is used for this cut because it is faster per call; its \s is a
# superset of regex's (it adds U+001C..U+001F), so it never cuts where `regex` would not.
CHUNK_BOUNDARY_PATTERN = r"(?= \S)"
DEFAULT_CACHE_SIZE = 100_000   # entries in each LRU cache (chunks, pieces); ~200 bytes each, ~40 MB if both fill
# Longer chunks and pieces are encoded but not cached: a word-sized chunk repeats, a long one
# (a URL, base64, a run without spaces) rarely does, and each would hold its text and a tuple of
# ids (8 bytes each). So an entry holds at most ~1 kB and a full cache at most ~100 MB, whatever the text.
CACHED_CHARS = 64


class GPT2Tokenizer:
    """GPT-2's byte-level BPE tokenizer, with the API of transformers' GPT2Tokenizer.

    Special tokens (the policy):
      - `tok(text)`, `tok.encode(text)`: like transformers, the literal text "<|endoftext|>"
        becomes id 50256. Convenient for your own text, wrong for text from users.
      - For untrusted text use `tok.encode_ordinary(text)` or `tok.encode(text, allowed_special=())`:
        "<|endoftext|>" is then encoded as ordinary characters (several ids), like OpenAI's
        encoder.py, so nobody can inject a control token.
      - `tok.encode(text, disallowed_special="all")` raises ValueError if the text contains one
        (tiktoken's default), unless it is also named in an explicit `allowed_special`: as in
        tiktoken, a special token named in disallowed_special raises unless explicitly allowed.

    Decoding is exact: `decode(encode(s)) == s` for every string; no space clean-up unless asked
    (`clean_up_tokenization_spaces=True`). Bytes that do not form valid UTF-8 (a token sequence
    cut inside a character) become U+FFFD, as the reference does; `decode_bytes` gives the bytes.
    """

    def __init__(self, vocab_file, merges_file, *, add_prefix_space=False, pad_token=None,
                 padding_side="right", truncation_side="right", model_max_length=1024,
                 unk_token=ENDOFTEXT, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                 cache_size=DEFAULT_CACHE_SIZE):
        self.vocab_file, self.merges_file = str(vocab_file), str(merges_file)
        encoder, merges = load_vocab(vocab_file), load_merges(merges_file)
        self.encoder = encoder                                        # token string -> id
        self.decoder = {i: token for token, i in encoder.items()}     # id -> token string
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}  # (left, right) -> rank
        self.add_prefix_space = add_prefix_space
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("right", "left"):      # as transformers: checked here, not at the first batch
                raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
        self.padding_side, self.truncation_side = padding_side, truncation_side
        check_positive_int(model_max_length, "model_max_length")
        self.model_max_length = model_max_length
        self.unk_token, self.bos_token, self.eos_token = unk_token, bos_token, eos_token
        self.pad_token = pad_token   # None, as in transformers: GPT-2 was trained without padding
        # Special tokens: <|endoftext|>, and any entry that is not spelled in the byte alphabet
        # (a token added to vocab.json by hand, such as "<my pad>"): matched as whole text, never BPE'd.
        self.special_tokens = {t: encoder[t] for t in {unk_token, bos_token, eos_token} if t in encoder}
        self.special_tokens.update({t: i for t, i in encoder.items() if not is_symbol_string(t)})
        self._all_special = frozenset(self.special_tokens)

        # The tables the fast path uses: everything as ids and bytes, no symbol strings.
        missing = [b for b in range(256) if BYTE_TO_CHAR[b] not in encoder]
        if missing:
            raise ValueError(f"{vocab_file}: no token for byte(s) {missing[:8]}; a byte-level "
                             "vocabulary needs all 256 single-byte tokens")
        self._byte_ids = [encoder[BYTE_TO_CHAR[b]] for b in range(256)]
        self._id_to_bytes = {i: token.encode("utf-8") if token in self.special_tokens else symbols_to_bytes(token)
                             for token, i in encoder.items()}   # "<|endoftext|>" is written as itself
        self._bytes_to_id = {}   # whole-token shortcut: bytes of an entry -> its id (GPT-2's merges only)
        if len(encoder) - len(self.special_tokens) == 256 + 50000 and is_gpt2_merges(merges_file):
            self._bytes_to_id = {data: i for i, data in self._id_to_bytes.items()
                                 if self.decoder[i] not in self.special_tokens}
        self._merge_ranks = {}   # (left id, right id) -> rank
        self._merge_ids = {}     # (left id, right id) -> id of the merged token
        for rank, (left, right) in enumerate(merges):   # a repeated line: the last rank wins, as in HF
            try:
                pair, new_id = (encoder[left], encoder[right]), encoder[left + right]
            except KeyError as error:
                raise ValueError(f"{merges_file}: merge {rank} ({left} {right}) uses {error.args[0]!r}, "
                                 f"which is not in {vocab_file}") from None
            self._merge_ranks[pair] = rank
            self._merge_ids[pair] = new_id

        self._pretokenize = regex.compile(PRETOKENIZE_PATTERN)
        self._pretokenize_ascii = re.compile(ASCII_PRETOKENIZE_PATTERN, re.ASCII)
        self._chunk_boundary = re.compile(CHUNK_BOUNDARY_PATTERN)
        self.cache_size = cache_size
        self._make_caches()

    def _make_caches(self):
        # Per-instance LRU caches (bounded, unlike OpenAI's dict): chunk -> ids and piece -> ids,
        # for chunks and pieces of at most CACHED_CHARS characters (see there).
        self._encode_chunk = functools.lru_cache(maxsize=self.cache_size)(self._encode_chunk_uncached)
        self._encode_piece = functools.lru_cache(maxsize=self.cache_size)(self._encode_piece_uncached)

    def __getstate__(self):      # pickle (multiprocessing) without the caches, which cannot be pickled
        state = dict(self.__dict__)
        del state["_encode_chunk"], state["_encode_piece"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_caches()

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, name_or_folder, *, cache_dir=None, local_files_only=False, **kwargs):
        """Load from a folder with vocab.json + merges.txt (or encoder.json + vocab.bpe), or a name.

        The five official names (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) share one
        vocabulary, shipped with the package: they work offline. Other names go through
        `minigpt2.weights.hub`; a model folder without vocabulary files falls back to GPT-2's.
        Keyword arguments (add_prefix_space=True, pad_token=..., ...) go to the constructor and
        win over the folder's tokenizer_config.json.
        """
        folder = tokenizer_folder(name_or_folder, cache_dir=cache_dir, local_files_only=local_files_only)
        files = find_vocab_files(folder) or find_vocab_files(PACKAGE_VOCAB_DIR)
        settings = {**read_tokenizer_config(folder), **kwargs}
        return cls(*files, **settings)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        """Write vocab.json and merges.txt (Hugging Face's format) and return their paths."""
        return write_vocabulary(save_directory, self.encoder, self.bpe_ranks, filename_prefix)

    def save_pretrained(self, save_directory):
        """save_vocabulary plus tokenizer_config.json with the settings from_pretrained reads back."""
        files = self.save_vocabulary(save_directory)
        config_file = write_tokenizer_config(save_directory, {
            "add_prefix_space": self.add_prefix_space, "pad_token": self.pad_token,
            "padding_side": self.padding_side, "truncation_side": self.truncation_side,
            "model_max_length": self.model_max_length})
        return (*files, config_file)

    # ------------------------------------------------------------------ the BPE merge loop (bpe.py)

    def bpe_ids(self, data):
        """Bytes of one piece -> token ids (`bpe.bpe_ids` on this vocabulary's tables)."""
        return bpe.bpe_ids(data, self._byte_ids, self._merge_ranks, self._merge_ids)

    def bpe_ids_long(self, data):
        """`bpe_ids` for long pieces, in O(n log n) (`bpe.bpe_ids_long`)."""
        return bpe.bpe_ids_long(data, self._byte_ids, self._merge_ranks, self._merge_ids)

    def bpe_symbols(self, data, steps=None):
        """OpenAI's loop on vocabulary strings: b' hello' -> ['Ġhello'] (`bpe.bpe_symbols`)."""
        return bpe.bpe_symbols(data, self.bpe_ranks, steps)

    def _encode_piece_uncached(self, piece):
        data = piece.encode("utf-8")
        whole = self._bytes_to_id.get(data)
        if whole is not None:
            return (whole,)     # one GPT-2 vocabulary entry: BPE would rebuild it (see files.GPT2_MERGES_SHA256)
        return tuple(self.bpe_ids(data))

    def _encode_piece_bounded(self, piece):
        return self._encode_piece(piece) if len(piece) <= CACHED_CHARS else self._encode_piece_uncached(piece)

    def _encode_chunk_uncached(self, chunk):
        pieces = (self._pretokenize_ascii if chunk.isascii() else self._pretokenize).findall(chunk)
        # short pieces (all of a short chunk's) go through the cache without a length check each
        short = len(chunk) <= CACHED_CHARS or max(map(len, pieces), default=0) <= CACHED_CHARS
        return tuple(chain.from_iterable(map(self._encode_piece if short else self._encode_piece_bounded, pieces)))

    def _encode_chunk_bounded(self, chunk):
        return self._encode_chunk(chunk) if len(chunk) <= CACHED_CHARS else self._encode_chunk_uncached(chunk)

    def clear_cache(self):
        self._encode_chunk.cache_clear()
        self._encode_piece.cache_clear()

    def cache_info(self):
        """(chunk cache, piece cache) statistics from functools.lru_cache."""
        return self._encode_chunk.cache_info(), self._encode_piece.cache_info()

    # ------------------------------------------------------------------ encode

    def encode_ordinary(self, text):
        """Text -> ids with no special tokens at all: "<|endoftext|>" is just characters."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if self.wants_prefix_space(text):
            text = " " + text
        # Cut into chunks, look each up in the cache (C loops only): the whole warm-cache cost.
        # Chunks too long to cache (rare) take a slower path that checks each length.
        chunks = self._chunk_boundary.split(text)
        encode_chunk = (self._encode_chunk if len(text) <= CACHED_CHARS or max(map(len, chunks)) <= CACHED_CHARS
                        else self._encode_chunk_bounded)
        try:
            return list(chain.from_iterable(map(encode_chunk, chunks)))
        except UnicodeEncodeError:
            raise surrogate_error(text) from None

    def encode(self, text, *, allowed_special=None, disallowed_special=(), add_special_tokens=True,
               truncation=False, max_length=None, return_tensors=None):
        """Text -> list of ids (int64 array [1, seq] with return_tensors="np"). See the class
        docstring for the special-token policy.

        allowed_special: "all" or a set of special token strings to turn into their ids; every
            other occurrence is encoded as ordinary text. Default: every special token that is
            not named in disallowed_special (so by default all of them, like transformers).
        disallowed_special: "all" or a set; if the text contains one that allowed_special does
            not explicitly allow, raise ValueError (tiktoken's rule).
        add_special_tokens: accepted for transformers compatibility; GPT-2 adds none (no BOS).
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        allowed = self.allowed_special_in(text, allowed_special, disallowed_special)
        if any(token in text for token in allowed):
            ids = []
            for chunk in self.split_special(text, allowed):
                ids += [self.encoder[chunk]] if chunk in allowed else self.encode_ordinary(chunk)
        else:
            ids = self.encode_ordinary(text)   # the common case, kept short: one call per line matters
        if truncation or max_length is not None:
            check_positive_int(max_length, "max_length")
            ids = truncate(ids, max_length if max_length is not None else self.model_max_length,
                           self.truncation_side)
        if return_tensors is not None:
            return pad_and_stack(self, [ids], None, single=False, padding=False, max_length=None,
                                 pad_to_multiple_of=None, return_tensors=return_tensors,
                                 return_attention_mask=False)["input_ids"]
        return ids

    def allowed_special_in(self, text, allowed_special=None, disallowed_special=()):
        """The special tokens to encode as ids in `text`. tiktoken's rule: one named in disallowed_special
        raises ValueError unless allowed_special names it explicitly; None allows all not disallowed."""
        if allowed_special is None and not disallowed_special:
            return self._all_special     # the default, kept short: every special token, none refused
        disallowed = self._special_set(disallowed_special, "disallowed_special")
        allowed = (self._all_special - disallowed if allowed_special is None
                   else self._special_set(allowed_special, "allowed_special"))
        for token in disallowed - allowed:
            if token in text:
                raise ValueError(f"the text contains the special token {token!r}, which disallowed_special "
                                 f"refuses; pass allowed_special={{{token!r}}} to encode it as id "
                                 f"{self.encoder[token]}, or use encode_ordinary to encode it as text")
        return allowed

    def _special_set(self, value, name):
        if value == "all":
            return self._all_special
        if not value:
            return frozenset()
        if isinstance(value, str):       # frozenset("<|endoftext|>") would be its characters
            raise ValueError(f"{name} must be 'all' or a set of special tokens, e.g. {name}={{{value!r}}}; "
                             f"got the string {value!r}")
        value = frozenset(value)
        unknown = value - self._all_special
        if unknown:
            raise ValueError(f"{name}: {sorted(unknown)} are not special tokens of this tokenizer "
                             f"(it has {sorted(self.special_tokens)})")
        return value

    def split_special(self, text, allowed):
        """'a<|endoftext|>b' -> ['a', '<|endoftext|>', 'b'] for the allowed special tokens present."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        present = [t for t in allowed if t in text]
        if not present:
            return [text]
        # longest first, so a special token that contains another one wins
        alternatives = "|".join(regex.escape(t) for t in sorted(present, key=len, reverse=True))
        return [chunk for chunk in regex.split(f"({alternatives})", text) if chunk]

    def encode_with_offsets(self, text, allowed_special=None, disallowed_special=()):
        """Text -> [(id, (start, end))]: each token with its character span in `text` (prefix space
        excluded); the special-token arguments are those of `encode`."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        allowed = self.allowed_special_in(text, allowed_special, disallowed_special)
        try:
            return list(self._encode_chunks(text, allowed))
        except UnicodeEncodeError:
            raise surrogate_error(text) from None

    def _encode_chunks(self, text, allowed):
        """Yield (id, (start, end)) per token: character offsets into `text` (prefix space excluded)."""
        start = 0
        for chunk in self.split_special(text, allowed):
            if chunk in allowed:
                yield self.encoder[chunk], (start, start + len(chunk))
            else:
                yield from self._encode_with_offsets(chunk, start)
            start += len(chunk)

    def _encode_with_offsets(self, text, base):
        """Yield (id, (start, end)) for ordinary text that starts at character `base` of the input.

        A token holding part of a character gets that whole character's span; the added prefix
        space counts as part of the first character (as in `tokenizers`).
        """
        added = self.wants_prefix_space(text)
        if added:
            text = " " + text
        for match in self._pretokenize.finditer(text):
            piece = match.group()
            char_of_byte = [match.start() + c for c, char in enumerate(piece) for _ in char.encode("utf-8")]
            byte_start = 0
            for token_id in self._encode_piece_bounded(piece):
                byte_end = byte_start + len(self._id_to_bytes[token_id])
                first, last = char_of_byte[byte_start], char_of_byte[byte_end - 1]
                if added:
                    first, last = max(first - 1, 0), max(last - 1, 0)
                yield token_id, (base + first, base + last + 1)
                byte_start = byte_end

    def wants_prefix_space(self, text):
        # Like tokenizers' ByteLevel(add_prefix_space=True), which transformers 5 runs: only when the
        # text (each part between special tokens) is non-empty and does not start with a space.
        return self.add_prefix_space and text != "" and not text.startswith(" ")

    def tokenize(self, text, **kwargs):
        """Text -> token strings as they appear in the vocabulary ('Ġworld')."""
        return [self.decoder[i] for i in self.encode(text, **kwargs)]

    # ------------------------------------------------------------------ decode

    def decode_bytes(self, ids):
        """Ids -> the raw bytes they stand for (may end inside a UTF-8 character)."""
        if type(ids) is not list:
            ids = _as_id_list(ids)
        try:
            return b"".join(map(self._id_to_bytes.__getitem__, map(operator.index, ids)))  # 1.0 is no id
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._id_to_bytes)
            if isinstance(bad, (list, tuple)):
                raise ValueError(f"decode takes one sequence of ids, got a nested one ({bad!r} inside); "
                                 "use batch_decode for a batch") from None
            raise ValueError(f"token id {bad!r} is not in the vocabulary (ids 0..{len(self) - 1})") from None

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        """Ids -> text. Invalid UTF-8 becomes U+FFFD (errors="replace", as in the reference)."""
        if skip_special_tokens:
            special_ids = set(self.special_tokens.values())
            ids = _as_id_list(ids)
            try:
                ids = [i for i in ids if i not in special_ids]
            except TypeError:      # an unhashable entry (a nested list): decode_bytes names it
                pass
        text = self.decode_bytes(ids).decode("utf-8", errors="replace")
        return clean_up_spaces(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, **kwargs):
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        if sequences is None or isinstance(sequences, (str, bytes)):
            raise ValueError(f"batch_decode takes a list of id sequences, got {type(sequences).__name__}")
        return [self.decode(ids, **kwargs) for ids in sequences]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.encoder.get(tokens, self.encoder.get(self.unk_token))
        if tokens is None or isinstance(tokens, bytes):
            raise ValueError(f"tokens must be a str or a list of str, got {type(tokens).__name__}")
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            return self.decoder[ids] if ids in self.decoder else self._bad_id(ids)
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            self._bad_id(ids)      # None, a float, a string: not an id nor a list of ids
        return [self.convert_ids_to_tokens(i) for i in ids
                if not (skip_special_tokens and self.decoder.get(i) in self.special_tokens)]

    def convert_tokens_to_string(self, tokens):
        return symbols_to_bytes("".join(tokens)).decode("utf-8", errors="replace")

    def _bad_id(self, token_id):
        raise ValueError(f"token id {token_id!r} is not in the vocabulary (ids 0..{len(self) - 1})")

    # ------------------------------------------------------------------ vocabulary facts

    def __len__(self):
        return len(self.encoder)

    @property
    def vocab_size(self):
        return len(self.encoder)

    def get_vocab(self):
        return dict(self.encoder)

    @property
    def eos_token_id(self):
        return self.encoder.get(self.eos_token)

    @property
    def bos_token_id(self):
        return self.encoder.get(self.bos_token)

    @property
    def unk_token_id(self):
        return self.encoder.get(self.unk_token)

    @property
    def pad_token_id(self):
        return None if self.pad_token is None else self.encoder.get(self.pad_token)

    @pad_token_id.setter
    def pad_token_id(self, token_id):
        self.pad_token = None if token_id is None else self.convert_ids_to_tokens(token_id)

    @property
    def pad_token(self):
        return self._pad_token

    @pad_token.setter
    def pad_token(self, token):
        if isinstance(token, int):
            raise ValueError(f"pad_token is a token string such as '<|endoftext|>', got the int {token}; "
                             "to set it by id, set pad_token_id")
        if token is not None and (not isinstance(token, str) or token not in self.encoder):
            raise ValueError(f"pad_token {token!r} is not in the vocabulary")
        self._pad_token = token

    def __repr__(self):
        return (f"GPT2Tokenizer(vocab_size={len(self)}, vocab_file={self.vocab_file!r}, "
                f"add_prefix_space={self.add_prefix_space}, pad_token={self.pad_token!r}, "
                f"padding_side={self.padding_side!r})")

    # ------------------------------------------------------------------ batches: __call__ (encode_call.py)

    __call__ = encode_call   # tok(text, ...): one text or a batch, pairs, truncation, padding, offsets

    # ------------------------------------------------------------------ explain

    def explain(self, text, allowed_special=None, disallowed_special=()):
        """Show the work: pieces, their bytes, each merge applied, the ids. Returns an Explanation."""
        allowed = self.allowed_special_in(text, allowed_special, disallowed_special)
        try:
            return explain(self, text, allowed)
        except UnicodeEncodeError:
            raise surrogate_error(text) from None


def _as_id_list(ids):
    """A list of Python ints from a list, tuple or NumPy array (a single id is refused: decode([5]))."""
    if hasattr(ids, "tolist"):       # NumPy array or scalar
        if getattr(ids, "dtype", None) is not None and ids.dtype.kind not in "iu" and ids.size:
            raise ValueError(f"token ids must be integers, got an array of dtype {ids.dtype}")
        ids = ids.tolist()
    if ids is None or isinstance(ids, (str, bytes, int, float)) or not hasattr(ids, "__iter__"):
        raise ValueError(f"token ids must be a list of ints, got {type(ids).__name__} {ids!r:.40}")
    return list(ids)


def clean_up_spaces(text):
    """transformers' clean_up_tokenization: drop the space before punctuation (lossy; off by default)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                          (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
