"""The tokenizer's files: vocab.json / encoder.json, merges.txt / vocab.bpe, tokenizer_config.json.

    load_vocab(path)            -> {token string: id}
    load_merges(path)           -> [(left, right), ...]  (the rank of a merge is its index)
    tokenizer_folder(name)      -> the folder of a model name or path (the shipped files for GPT-2's names)
    find_vocab_files(folder)    -> (vocab_file, merges_file), or None
    read_tokenizer_config(folder) -> the settings we understand, as constructor keywords
    write_vocabulary(folder, encoder, bpe_ranks, prefix) -> (vocab.json, merges.txt) in HF's format
"""

import hashlib
import json
import os
from pathlib import Path

PACKAGE_VOCAB_DIR = Path(__file__).resolve().parent.parent / "data" / "gpt2"
VOCAB_FILE_PAIRS = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))  # HF, OpenAI
# sha256 of GPT-2's vocab.bpe (pinned by tiktoken; see data/gpt2/SOURCE.md). With exactly these
# merges, every vocabulary entry is rebuilt by BPE from its own bytes (the tests check all 50,256),
# so a piece that is an entry can skip the merge loop. Other vocabularies always run it.
GPT2_MERGES_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
OFFICIAL_NAMES = {  # these all use the same GPT-2 vocabulary, shipped in minigpt2/data/gpt2
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2",
    "openai-community/gpt2", "openai-community/gpt2-medium", "openai-community/gpt2-large",
    "openai-community/gpt2-xl", "distilbert/distilgpt2",
}


def tokenizer_folder(name_or_folder, cache_dir=None, local_files_only=False):
    """The folder to read a tokenizer from: a folder as given, the shipped GPT-2 files for the
    official names (offline), else the model folder `minigpt2.weights.hub` resolves (may download)."""
    name = str(name_or_folder)
    if os.path.isdir(name):
        return Path(name)
    if name in OFFICIAL_NAMES:
        return PACKAGE_VOCAB_DIR
    from minigpt2.weights import hub   # imported here: only names outside the package need it
    return Path(hub.resolve_model_folder(name, cache_dir=cache_dir, local_files_only=local_files_only))


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


def is_gpt2_merges(merges_file):
    """True when the file is byte for byte GPT-2's vocab.bpe (see GPT2_MERGES_SHA256)."""
    with open(merges_file, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == GPT2_MERGES_SHA256


def read_tokenizer_config(folder):
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
        if isinstance(value, dict):            # AddedToken written as {"content": ...}
            value = value.get("content")
        if key == "pad_token" and value is not None and not isinstance(value, str):
            raise ValueError(f"{path}: pad_token must be a token string such as '<|endoftext|>', got {value!r}")
        if value is not None:
            settings[key] = value
    max_length = config.get("model_max_length")
    if isinstance(max_length, int) and max_length < 10**9:   # HF writes 1e30 for "no limit"
        settings["model_max_length"] = max_length
    return settings


def write_vocabulary(save_directory, encoder, bpe_ranks, filename_prefix=None):
    """Write vocab.json and merges.txt (Hugging Face's format) into a folder; return their paths."""
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; save_vocabulary needs a folder to write vocab.json "
                         "and merges.txt into")
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{filename_prefix}-" if filename_prefix else ""
    vocab_file, merges_file = folder / f"{prefix}vocab.json", folder / f"{prefix}merges.txt"
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write(json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for left, right in sorted(bpe_ranks, key=bpe_ranks.get):
            f.write(f"{left} {right}\n")
    return str(vocab_file), str(merges_file)


def write_tokenizer_config(save_directory, settings):
    """tokenizer_config.json with `settings` (and tokenizer_class); returns its path."""
    config_file = Path(save_directory) / "tokenizer_config.json"
    config_file.write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", **settings}, indent=2) + "\n",
                           encoding="utf-8")
    return str(config_file)
