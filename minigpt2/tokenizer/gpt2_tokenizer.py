"""GPT2Tokenizer: text <-> token ids with OpenAI's byte-level BPE, exactly.

Encoding one text takes four steps, each a small piece of this file:

1. split off special tokens such as "<|endoftext|>" (only those allowed, see `encode`);
2. pre-split the rest into pieces with GPT-2's regex (`PRETOKENIZE_PATTERN`, needs `regex`);
3. turn each piece into its UTF-8 bytes, one token per byte to start with;
4. apply merges, lowest rank first, until no adjacent pair has a merge (`bpe_ids`).

Step 4 runs once per distinct piece: results sit in a bounded LRU cache, and a piece that
is itself a vocabulary entry (" the", "Hello") is looked up directly, as tiktoken does
(for GPT-2's own merges, where that is proven by the tests).
Steps 2-4 also run once per distinct word-sized chunk (`CHUNK_BOUNDARY_PATTERN`), so text
made of words seen before costs one split and one cache lookup per word.
`explain(text)` shows every step with the readable string version of the merge loop
(`bpe_symbols`), which the tests hold equal to the fast id version.
"""

import functools
import hashlib
import heapq
import json
import operator
import os
import re
from itertools import chain, repeat
from pathlib import Path

import regex

from minigpt2.tokenizer.batch_encoding import pad_and_stack
from minigpt2.tokenizer.explain import explain
from minigpt2.tokenizer.bytes_unicode import BYTE_TO_CHAR, bytes_to_symbols, is_symbol_string, symbols_to_bytes

# OpenAI's pattern (openai/gpt-2 src/encoder.py). The contractions are case-sensitive (OpenAI's
# comment: "Should have added re.IGNORECASE"): "I'm" -> "I", "'m" but "I'M" -> "I", "'", "M".
PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same pattern for ASCII-only text, where \p{L} is [A-Za-z], \p{N} is [0-9] and \s is
# [\t\n\v\f\r ] (re.ASCII): the standard library's `re` runs it with less overhead per call.
ASCII_PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"
OFFICIAL_NAMES = {  # these all use the same GPT-2 vocabulary, shipped in minigpt2/data/gpt2
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2",
    "openai-community/gpt2", "openai-community/gpt2-medium", "openai-community/gpt2-large",
    "openai-community/gpt2-xl", "distilbert/distilgpt2",
}
# A speed-up that changes nothing: the pattern always starts a new piece at a space followed by
# a non-space (" ?\p{L}+", " ?\p{N}+" or " ?[^\s\p{L}\p{N}]+" takes it, and no earlier piece can
# hold that space). So we may first cut the text there, into word-sized chunks, and pre-split
# and cache each chunk on its own.
# The standard library's `re` is used for this cut because it is faster per call; its \s is a
# superset of regex's (it adds U+001C..U+001F), so it never cuts where `regex` would not.
CHUNK_BOUNDARY_PATTERN = r"(?= \S)"
NO_MERGE = float("inf")  # the rank of a pair that has no merge
LONG_PIECE_BYTES = 256   # longer pieces use the heap loop (bpe_ids_long): same ids, not quadratic

PACKAGE_VOCAB_DIR = Path(__file__).resolve().parent.parent / "data" / "gpt2"
VOCAB_FILE_PAIRS = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))  # HF, OpenAI
# sha256 of GPT-2's vocab.bpe (pinned by tiktoken; see data/gpt2/SOURCE.md). With exactly these
# merges, every vocabulary entry is rebuilt by BPE from its own bytes (the tests check all 50,256),
# so a piece that is an entry can skip the merge loop. Other vocabularies always run it.
GPT2_MERGES_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
DEFAULT_CACHE_SIZE = 100_000   # entries in each LRU cache (chunks, pieces); ~200 bytes each, ~40 MB if both fill


# ----------------------------------------------------------------------------- files

def load_vocab(vocab_file):
    """encoder.json / vocab.json -> dict token string -> id."""
    try:
        with open(vocab_file, encoding="utf-8") as f:
            encoder = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{vocab_file}: not valid JSON ({error})") from None
    if not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values()):
        raise ValueError(f"{vocab_file}: expected a JSON object mapping token strings to integer ids")
    if len(set(encoder.values())) != len(encoder):
        raise ValueError(f"{vocab_file}: two token strings share an id")
    return encoder


def load_merges(merges_file):
    """vocab.bpe / merges.txt -> list of (left, right) pairs; the rank of a merge is its index."""
    try:
        with open(merges_file, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"{merges_file}: not UTF-8 text ({error})") from None
    first = 1 if lines and lines[0].startswith("#version") else 0   # "#version: 0.2" header
    merges = [tuple(line.rstrip("\r").split(" ")) for line in lines[first:]]
    for line_number, merge in enumerate(merges, start=first + 1):
        if len(merge) != 2 or not all(merge):
            if merge == ("",):
                continue       # an empty line (the file ends with a newline)
            raise ValueError(f"{merges_file}, line {line_number}: expected two symbols "
                             f"separated by one space, got {' '.join(merge)!r}")
    return [merge for merge in merges if merge != ("",)]


def find_vocab_files(folder):
    """(vocab_file, merges_file) in `folder`, HF names first; None if the folder has neither pair."""
    for vocab_name, merges_name in VOCAB_FILE_PAIRS:
        vocab_file, merges_file = Path(folder) / vocab_name, Path(folder) / merges_name
        if vocab_file.is_file() and merges_file.is_file():
            return vocab_file, merges_file
    for vocab_name, merges_name in VOCAB_FILE_PAIRS:
        # half a pair: falling back to GPT-2's files would silently use another vocabulary
        present = [name for name in (vocab_name, merges_name) if (Path(folder) / name).is_file()]
        if len(present) == 1:
            missing = merges_name if present[0] == vocab_name else vocab_name
            raise ValueError(f"{folder}: has {present[0]} but no {missing}; a GPT-2 tokenizer needs both")
    return None


# ----------------------------------------------------------------------------- the tokenizer

class GPT2Tokenizer:
    """GPT-2's byte-level BPE tokenizer, with the API of transformers' GPT2Tokenizer.

    Special tokens (the policy):
      - `tok(text)`, `tok.encode(text)`: like transformers, the literal text "<|endoftext|>"
        becomes id 50256. Convenient for your own text, wrong for text from users.
      - For untrusted text use `tok.encode_ordinary(text)` or `tok.encode(text, allowed_special=())`:
        "<|endoftext|>" is then encoded as ordinary characters (several ids), like OpenAI's
        encoder.py, so nobody can inject a control token.
      - `tok.encode(text, disallowed_special="all")` raises ValueError if the text contains one
        (tiktoken's default).

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
        _check_positive_int(model_max_length, "model_max_length")
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
        if len(encoder) - len(self.special_tokens) == 256 + 50000 and _sha256(merges_file) == GPT2_MERGES_SHA256:
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
        # Per-instance LRU caches (bounded, unlike OpenAI's dict): chunk -> ids and piece -> ids.
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
        name = str(name_or_folder)
        if os.path.isdir(name):
            folder = Path(name)
        elif name in OFFICIAL_NAMES:
            folder = PACKAGE_VOCAB_DIR
        else:
            from minigpt2.weights import hub   # imported here: only names outside the package need it
            folder = Path(hub.resolve_model_folder(name, cache_dir=cache_dir,
                                                   local_files_only=local_files_only))
        files = find_vocab_files(folder) or find_vocab_files(PACKAGE_VOCAB_DIR)
        settings = {**_read_tokenizer_config(folder), **kwargs}
        return cls(*files, **settings)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        """Write vocab.json and merges.txt (Hugging Face's format) and return their paths."""
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; save_vocabulary needs a folder to write vocab.json "
                             "and merges.txt into")
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        vocab_file, merges_file = folder / f"{prefix}vocab.json", folder / f"{prefix}merges.txt"
        with open(vocab_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        with open(merges_file, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for left, right in sorted(self.bpe_ranks, key=self.bpe_ranks.get):
                f.write(f"{left} {right}\n")
        return str(vocab_file), str(merges_file)

    def save_pretrained(self, save_directory):
        """save_vocabulary plus tokenizer_config.json with the settings from_pretrained reads back."""
        files = self.save_vocabulary(save_directory)
        config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": self.add_prefix_space,
                  "pad_token": self.pad_token, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side, "model_max_length": self.model_max_length}
        config_file = Path(save_directory) / "tokenizer_config.json"
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return (*files, str(config_file))

    # ------------------------------------------------------------------ the BPE merge loop

    def bpe_ids(self, data):
        """Bytes of one piece -> token ids: merge the lowest-ranked adjacent pair until none is left.

        `pair_ranks[i]` is the merge rank of (ids[i], ids[i + 1]). Each round merges the leftmost
        pair of lowest rank and re-ranks only its two new neighbours (as tiktoken and `tokenizers`
        do). OpenAI's loop (`bpe_symbols`) instead merges every occurrence of that pair in one
        round; the two agree because a merge's result only takes part in later (higher-ranked)
        merges, so the other occurrences stay the lowest until they are merged too, left to right.
        tests/test_tokenizer.py checks both on every vocabulary entry.
        """
        if len(data) > LONG_PIECE_BYTES:
            return self.bpe_ids_long(data)
        ids = [self._byte_ids[b] for b in data]        # one token per byte to start
        get_rank = self._merge_ranks.get
        pair_ranks = list(map(get_rank, zip(ids, ids[1:]), repeat(NO_MERGE)))
        while pair_ranks:
            best = min(pair_ranks)
            if best == NO_MERGE:
                break                                   # no adjacent pair can merge
            i = pair_ranks.index(best)                  # the leftmost pair with that rank
            ids[i:i + 2] = [self._merge_ids[ids[i], ids[i + 1]]]
            del pair_ranks[i]
            if i > 0:                                   # the pair (left neighbour, new token)
                pair_ranks[i - 1] = get_rank((ids[i - 1], ids[i]), NO_MERGE)
            if i < len(pair_ranks):                     # the pair (new token, right neighbour)
                pair_ranks[i] = get_rank((ids[i], ids[i + 1]), NO_MERGE)
        return ids

    def bpe_ids_long(self, data):
        """`bpe_ids` for long pieces: the same merges in the same order, in O(n log n).

        Each round of `bpe_ids` scans the whole piece, so a piece of n bytes costs O(n^2): a
        40 KB run of one emoji (a single piece to the pre-tokenizer) took 20 s. Here the pairs
        wait in a heap ordered by (rank, position of the left token), the tokens form a linked
        list, and an entry whose tokens have changed since it was pushed is skipped when popped.
        """
        ids = [self._byte_ids[b] for b in data]        # one token per byte; merged ones go dead
        n = len(ids)
        get_rank = self._merge_ranks.get
        next_index, prev_index, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
        heap = [(rank, i) for i, rank in enumerate(map(get_rank, zip(ids, ids[1:]))) if rank is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = next_index[i]
            if not alive[i] or j == n or get_rank((ids[i], ids[j])) != rank:
                continue                                # stale: that pair is gone
            ids[i] = self._merge_ids[ids[i], ids[j]]    # token i absorbs its right neighbour j
            alive[j] = False
            next_index[i] = next_index[j]
            if next_index[i] < n:
                prev_index[next_index[i]] = i
            for left in (prev_index[i], i):             # the two pairs the new token is part of
                right = next_index[left] if left >= 0 else n
                if left >= 0 and right < n:
                    new_rank = get_rank((ids[left], ids[right]))
                    if new_rank is not None:
                        heapq.heappush(heap, (new_rank, left))
        return [token for token, keep in zip(ids, alive) if keep]

    def bpe_symbols(self, data, steps=None):
        """OpenAI's loop, on vocabulary strings: b' hello' -> ['Ġhello'].

        Slower, but what you read in encoder.json and vocab.bpe. If `steps` is a list, each
        merge is appended as (rank, left, right, symbols after the merge).
        """
        symbols = list(bytes_to_symbols(data))          # one symbol per byte to start
        while len(symbols) > 1:
            pairs = list(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
            if steps is not None:
                steps.append((self.bpe_ranks[best], best[0], best[1], list(symbols)))
        return symbols

    def _encode_piece_uncached(self, piece):
        data = piece.encode("utf-8")
        whole = self._bytes_to_id.get(data)
        if whole is not None:
            return (whole,)     # one GPT-2 vocabulary entry: BPE would rebuild it (see GPT2_MERGES_SHA256)
        return tuple(self.bpe_ids(data))

    def _encode_chunk_uncached(self, chunk):
        pattern = self._pretokenize_ascii if chunk.isascii() else self._pretokenize
        return tuple(chain.from_iterable(map(self._encode_piece, pattern.findall(chunk))))

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
        if self._wants_prefix_space(text):
            text = " " + text
        # Cut into chunks, look each up in the cache (C loops only): the whole warm-cache cost.
        try:
            return list(chain.from_iterable(map(self._encode_chunk, self._chunk_boundary.split(text))))
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None

    def encode(self, text, *, allowed_special="all", disallowed_special=(), add_special_tokens=True,
               truncation=False, max_length=None, return_tensors=None):
        """Text -> list of ids (int64 array [1, seq] with return_tensors="np"). See the class
        docstring for the special-token policy.

        allowed_special: "all" (default, like transformers) or a set of special token strings to
            turn into their ids; every other occurrence is encoded as ordinary text.
        disallowed_special: "all" or a set; if the text contains one, raise ValueError.
        add_special_tokens: accepted for transformers compatibility; GPT-2 adds none (no BOS).
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special:
            self._refuse_disallowed(text, disallowed_special, allowed)
        if any(token in text for token in allowed):
            ids = []
            for chunk in self._split_special(text, allowed):
                ids += [self.encoder[chunk]] if chunk in allowed else self.encode_ordinary(chunk)
        else:
            ids = self.encode_ordinary(text)   # the common case, kept short: one call per line matters
        if truncation or max_length is not None:
            _check_positive_int(max_length, "max_length")
            ids = self._truncate(ids, max_length if max_length is not None else self.model_max_length)
        if return_tensors is not None:
            return pad_and_stack(self, [ids], None, single=False, padding=False, max_length=None,
                                 pad_to_multiple_of=None, return_tensors=return_tensors,
                                 return_attention_mask=False)["input_ids"]
        return ids

    def _refuse_disallowed(self, text, disallowed_special, allowed):
        for token in self._special_set(disallowed_special, "disallowed_special") - allowed:
            if token in text:
                raise ValueError(f"the text contains the special token {token!r}; pass "
                                 f"allowed_special={{{token!r}}} to encode it as id "
                                 f"{self.encoder[token]}, or use encode_ordinary to encode it as text")

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

    def _split_special(self, text, allowed):
        """'a<|endoftext|>b' -> ['a', '<|endoftext|>', 'b'] for the allowed special tokens present."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        present = [t for t in allowed if t in text]
        if not present:
            return [text]
        # longest first, so a special token that contains another one wins
        alternatives = "|".join(regex.escape(t) for t in sorted(present, key=len, reverse=True))
        return [chunk for chunk in regex.split(f"({alternatives})", text) if chunk]

    def _encode_chunks(self, text, allowed):
        """Yield (id, (start, end)) per token: character offsets into `text` (prefix space excluded)."""
        start = 0
        for chunk in self._split_special(text, allowed):
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
        added = self._wants_prefix_space(text)
        if added:
            text = " " + text
        for match in self._pretokenize.finditer(text):
            piece = match.group()
            char_of_byte = [match.start() + c for c, char in enumerate(piece) for _ in char.encode("utf-8")]
            byte_start = 0
            for token_id in self._encode_piece(piece):
                byte_end = byte_start + len(self._id_to_bytes[token_id])
                first, last = char_of_byte[byte_start], char_of_byte[byte_end - 1]
                if added:
                    first, last = max(first - 1, 0), max(last - 1, 0)
                yield token_id, (base + first, base + last + 1)
                byte_start = byte_end

    def _wants_prefix_space(self, text):
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

    # ------------------------------------------------------------------ batches: __call__

    def __call__(self, text, text_pair=None, *, padding=False, truncation=False, max_length=None,
                 pad_to_multiple_of=None, return_tensors=None, return_attention_mask=True,
                 return_token_type_ids=False, return_offsets_mapping=False, is_split_into_words=False,
                 allowed_special="all", disallowed_special=(), add_special_tokens=True):
        """Encode one text or a list of texts (and optional second texts), the way transformers does.

        text_pair: a second text per text; its ids follow the first's (GPT-2 puts no token
            between them), and token_type_ids (with return_token_type_ids=True) are 0 / 1.
        is_split_into_words: each text is a list of words, each encoded on its own (with a space
            before it when add_prefix_space is set, as transformers does); a batch is a list of them.
        padding: False / "do_not_pad", True / "longest", or "max_length" (needs a pad_token).
        truncation: True / "longest_first", "only_first" or "only_second" cuts to max_length
            (default model_max_length, 1024), on `truncation_side`; "longest_first" shortens the
            longer text of a pair first, as transformers' tokenizers library does.
        return_tensors: None (lists) or "np" (int64 arrays [batch, seq]).
        Returns a BatchEncoding (a dict) with input_ids, attention_mask and, if asked,
        token_type_ids and offset_mapping (offsets count within each text, or each word).
        """
        texts, pairs, single = _batch_inputs(text, text_pair, is_split_into_words)
        _check_positive_int(max_length, "max_length")
        _check_positive_int(pad_to_multiple_of, "pad_to_multiple_of")
        if not isinstance(truncation, (bool, str, type(None))) or truncation not in _TRUNCATION_MODES:
            raise ValueError(f"truncation must be False, True, 'longest_first', 'only_first', "
                             f"'only_second' or 'do_not_truncate', got {truncation!r}")
        allowed = self._special_set(allowed_special, "allowed_special")
        limit = max_length if max_length is not None else self.model_max_length
        mode = _TRUNCATION_MODES[truncation]
        id_rows, type_rows = [], []
        offset_rows = [] if return_offsets_mapping else None
        for first, second in zip(texts, pairs):
            # items: token ids, or (id, (start, end)) pairs when offsets are asked for
            first = self._encode_for_call(first, allowed, disallowed_special, return_offsets_mapping)
            paired = second is not None
            second = (self._encode_for_call(second, allowed, disallowed_special, return_offsets_mapping)
                      if paired else [])
            if mode is not None:
                first, second = self._truncate_texts(first, second, limit, mode, paired)
            items = first + second
            if return_offsets_mapping:
                id_rows.append([token_id for token_id, _ in items])
                offset_rows.append([span for _, span in items])
            else:
                id_rows.append(items)
            type_rows.append([0] * len(first) + [1] * len(second))
        return pad_and_stack(self, id_rows, offset_rows, single=single, padding=padding,
                             max_length=max_length, pad_to_multiple_of=pad_to_multiple_of,
                             return_tensors=return_tensors, return_attention_mask=return_attention_mask,
                             type_rows=type_rows if return_token_type_ids else None)

    def _encode_for_call(self, text, allowed, disallowed_special, with_offsets):
        """One text (a str, or a list of words) -> ids, or (id, span) pairs if with_offsets."""
        words = [text] if isinstance(text, str) else text
        items = []
        for word in words:                 # a pre-split word is encoded on its own, as in transformers
            if disallowed_special:
                self._refuse_disallowed(word, disallowed_special, allowed)
            if with_offsets:
                try:
                    items += self._encode_chunks(word, allowed)
                except UnicodeEncodeError:
                    raise _surrogate_error(word) from None
            else:
                items += self.encode(word, allowed_special=allowed)
        return items

    def _truncate_texts(self, first, second, limit, mode, paired):
        """Cut a text, or a pair of texts, to `limit` tokens together (transformers' strategies)."""
        excess = len(first) + len(second) - limit
        if excess <= 0:
            return first, second
        if mode == "only_second" and not paired:
            raise ValueError("truncation='only_second' needs a text_pair")
        if mode == "longest_first" and paired:
            # keep the shorter text whole if the longer one alone can make room; otherwise both
            # get half of the limit (the longer one the odd token)
            short, long = sorted((len(first), len(second)))
            keep_short, keep_long = short, max(short, limit - short)
            if keep_short + keep_long > limit:
                keep_short, keep_long = limit // 2, limit // 2 + limit % 2
            keep_first, keep_second = ((keep_short, keep_long) if len(first) <= len(second)
                                       else (keep_long, keep_short))
            return self._truncate(first, keep_first), self._truncate(second, keep_second)
        # one text is cut (a single text: always the first), the other kept whole
        cut_first = mode != "only_second"
        text, other = (first, second) if cut_first else (second, first)
        if paired and excess >= len(text):
            raise ValueError(f"truncation={mode!r} cannot fit max_length={limit}: the "
                             f"{'first' if cut_first else 'second'} text has {len(text)} tokens and "
                             f"the other {len(other)}; use truncation='longest_first' or a larger max_length")
        text = self._truncate(text, len(text) - excess)
        return (text, second) if cut_first else (first, text)

    def _truncate(self, items, max_length):
        if max_length is None or len(items) <= max_length:
            return items
        if self.truncation_side == "left":
            return items[len(items) - max_length:]
        if self.truncation_side != "right":
            raise ValueError(f"truncation_side must be 'right' or 'left', got {self.truncation_side!r}")
        return items[:max_length]

    # ------------------------------------------------------------------ explain

    def explain(self, text, allowed_special="all"):
        """Show the work: pieces, their bytes, each merge applied, the ids. Returns an Explanation."""
        try:
            return explain(self, text, self._special_set(allowed_special, "allowed_special"))
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None


_TRUNCATION_MODES = {False: None, None: None, "do_not_truncate": None, True: "longest_first",
                     "longest_first": "longest_first", "only_first": "only_first",
                     "only_second": "only_second"}


def _batch_inputs(text, text_pair, is_split_into_words):
    """__call__'s inputs as (texts, pairs, single): one entry per batch row, pairs None-filled."""
    def is_text(x):                      # one text: a str, or a list of words when pre-split
        if is_split_into_words:
            return isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x)
        return isinstance(x, str)

    what = ("a list of words (str) or a list of such lists (is_split_into_words=True)"
            if is_split_into_words else "a str or a list of str")
    single = is_text(text)
    if not single and not (isinstance(text, (list, tuple)) and all(is_text(t) for t in text)):
        raise ValueError(f"text must be {what}, got {_describe(text, is_text)}")
    texts = [text] if single else list(text)
    if text_pair is None:
        return texts, [None] * len(texts), single
    if single and not is_text(text_pair):
        raise ValueError(f"text_pair must be one text of the same kind as text, "
                         f"got {_describe(text_pair, is_text)}")
    if not single and not (isinstance(text_pair, (list, tuple)) and all(is_text(t) for t in text_pair)):
        raise ValueError(f"for a batch of texts, text_pair must be a list of the same length, "
                         f"got {_describe(text_pair, is_text)}")
    pairs = [text_pair] if single else list(text_pair)
    if len(pairs) != len(texts):
        raise ValueError(f"text has {len(texts)} texts but text_pair has {len(pairs)}")
    return texts, pairs, single


def _describe(value, is_text):
    """'int', or 'a list holding dict' (its first element that is not a text), for an error message."""
    if isinstance(value, (list, tuple)):
        odd = next((v for v in value if not is_text(v)), None)
        return f"a {type(value).__name__} holding {type(odd).__name__ if odd is not None else 'nothing'}"
    return type(value).__name__


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _as_id_list(ids):
    """A list of Python ints from a list, tuple or NumPy array (a single id is refused: decode([5]))."""
    if hasattr(ids, "tolist"):       # NumPy array or scalar
        if getattr(ids, "dtype", None) is not None and ids.dtype.kind not in "iu" and ids.size:
            raise ValueError(f"token ids must be integers, got an array of dtype {ids.dtype}")
        ids = ids.tolist()
    if ids is None or isinstance(ids, (str, bytes, int, float)) or not hasattr(ids, "__iter__"):
        raise ValueError(f"token ids must be a list of ints, got {type(ids).__name__} {ids!r:.40}")
    return list(ids)


def _check_positive_int(value, name):
    """None, or an int >= 1 (a length): anything else is a ValueError naming the argument."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")


def _surrogate_error(text):
    """The ValueError for a str holding a lone surrogate (e.g. from bytes decoded with
    errors="surrogateescape"): it has no UTF-8 bytes, so it has no tokens."""
    surrogate = next(char for char in text if "\ud800" <= char <= "\udfff")
    return ValueError(f"text holds a lone surrogate {surrogate!r}, which is not valid Unicode and has no "
                      "UTF-8 bytes to tokenize; decode the source bytes with errors='replace' first")


def clean_up_spaces(text):
    """transformers' clean_up_tokenization: drop the space before punctuation (lossy; off by default)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                          (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def _read_tokenizer_config(folder):
    """The settings we understand from a Hugging Face tokenizer_config.json, if the folder has one."""
    path = Path(folder) / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(config).__name__}")
    settings = {}
    for key in ("add_prefix_space", "padding_side", "truncation_side", "pad_token"):
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value  # AddedToken {"content": ...}
        if key == "pad_token" and value is not None and not isinstance(value, str):
            raise ValueError(f"{path}: pad_token must be a token string such as '<|endoftext|>', got {value!r}")
        if value is not None:
            settings[key] = value
    max_length = config.get("model_max_length")
    if isinstance(max_length, int) and max_length < 10**9:   # HF writes 1e30 for "no limit"
        settings["model_max_length"] = max_length
    return settings
