"""Lesson 04: special tokens, padding and the attention mask.

GPT-2 has exactly one special token, "<|endoftext|>" = 50256, put between documents in training.
Whether the *text* "<|endoftext|>" becomes that id is a policy, and the libraries differ:

- transformers: yes (an "added token"); minigpt2's `tok(text)` / `tok.encode(text)` do the same;
- OpenAI's encoder.py, `encode_ordinary`, `allowed_special=()`: no, it is 7 ordinary tokens
  (the safe choice for text from users: nobody can inject an end-of-text);
- tiktoken's default (`disallowed_special="all"`): raise an error.

GPT-2 was trained without padding, so it has no pad token. To batch texts of different lengths we
pad with some id (usually eos = 50256) and say which positions are real with attention_mask
(1 = token, 0 = padding). Right padding for scoring; left padding for generation, so that every
row's last position is a real token (lesson 12 shows why the positions then need care). The
mask is only carried along here: attention (lesson 07) is where it acts, by giving padding keys
probability 0, so a real token never reads a pad.

    python -m lessons.l04_special_and_padding [--fast]
"""

import tempfile
from pathlib import Path

import numpy as np

from lessons._common import check_equal, check_true, parse_args, reference_json, run, title
from lessons.l03_bpe_merge import encode as encode_ordinary
from minigpt2.tokenizer import PACKAGE_VOCAB_DIR

EOT, EOT_ID = "<|endoftext|>", 50256


def encode_with_special(text):
    """Cut out each "<|endoftext|>" first, BPE the rest (lesson 03). The policy "allowed"."""
    ids = []
    for i, chunk in enumerate(text.split(EOT)):
        if i > 0:
            ids.append(EOT_ID)
        ids += encode_ordinary(chunk) if chunk else []
    return ids


def pad_batch(rows, pad_id, side):
    """Lists of ids -> (input_ids [b, longest], attention_mask [b, longest]). The piece taught here."""
    longest = max(len(r) for r in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        where = slice(0, len(r)) if side == "right" else slice(longest - len(r), longest)
        input_ids[i, where], attention_mask[i, where] = r, 1
    return input_ids, attention_mask


def main(argv=None):
    args = parse_args(__doc__, argv)
    from minigpt2.tokenizer import GPT2Tokenizer
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    refs = reference_json("tokenizer.json")

    title("one special token, three policies")
    text = "Hello<|endoftext|>world"
    print(f"{text!r}")
    print(f"  allowed  (transformers, tok.encode):  {encode_with_special(text)}")
    print(f"  ordinary (OpenAI, encode_ordinary):   {encode_ordinary(text)} = "
          f"{[tok.decode([i]) for i in encode_ordinary(text)]}")
    try:
        tok.encode(text, allowed_special=(), disallowed_special="all")
    except ValueError as error:
        print(f"  disallowed (tiktoken's default):     ValueError: {error}")
    print(f"decode(50256) = {tok.decode([EOT_ID])!r}; eos = bos = unk = {tok.eos_token!r}; "
          f"pad_token = {tok.pad_token!r} (none: GPT-2 was trained without padding)")

    title("add_prefix_space: the first word gets a space, so it looks like every other word")
    spaced = GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=True)
    print(f"'Hello world' -> {tok.encode('Hello world')};  with add_prefix_space -> {spaced.encode('Hello world')}")

    title("a batch, padded with eos, right and left")
    batch = refs["padded_batch"]
    rows = [encode_ordinary(t) for t in batch]
    ours = {}
    for side in ("right", "left"):
        ours[side] = pad_batch(rows, EOT_ID, side)
        print(f"{side}:\n  input_ids\n{ours[side][0]}\n  attention_mask\n{ours[side][1]}")

    title("checks")
    for entry in refs["texts"]:
        if EOT in entry["text"]:
            check_equal(f"{entry['text']!r}: allowed == tiktoken allowed_special='all'",
                        encode_with_special(entry["text"]), entry["allowed"])
            check_equal(f"{entry['text']!r}: ordinary == tiktoken encode_ordinary",
                        encode_ordinary(entry["text"]), entry["ordinary"])
            check_equal(f"{entry['text']!r}: library policies agree",
                        [tok.encode(entry["text"]), tok.encode_ordinary(entry["text"])],
                        [entry["allowed"], entry["ordinary"]])
    check_equal("'<|endoftext|>' as text is 7 ordinary tokens (OpenAI encoder.py)",
                len(encode_ordinary(EOT)), 7)
    check_equal("add_prefix_space: 'Hello world' -> ' Hello world' ids (HF docstring [18435, 995])",
                spaced.encode("Hello world"), [18435, 995])
    for side in ("right", "left"):
        reference = refs["padding"][side]
        check_equal(f"{side} padding == HF tokenizers' enable_padding", ours[side][0], reference["input_ids"])
        check_equal(f"{side} attention_mask == HF tokenizers'", ours[side][1], reference["attention_mask"])
        tok.pad_token, tok.padding_side = EOT, side
        library = tok(batch, padding=True, return_tensors="np")
        check_equal(f"{side} padding == minigpt2 tok(..., padding=True)",
                    [library["input_ids"], library["attention_mask"]], [*ours[side]])
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = tok.save_vocabulary(folder)
        again = GPT2Tokenizer(vocab_file, merges_file)
        same = again.encoder == tok.encoder and again.bpe_ranks == tok.bpe_ranks
        check_true("save_vocabulary -> vocab.json + merges.txt load back to the same tokenizer", same,
                   f"{Path(vocab_file).name} {Path(vocab_file).stat().st_size} B, "
                   f"{Path(merges_file).name} {Path(merges_file).stat().st_size} B")
        check_true("merges.txt is byte for byte OpenAI's vocab.bpe",
                   Path(merges_file).read_bytes() == (PACKAGE_VOCAB_DIR / "vocab.bpe").read_bytes())
    return 0


if __name__ == "__main__":
    run(main)
