"""Lesson 00: the files a GPT-2 model is made of, read by hand.

A GPT-2 checkpoint in Hugging Face's layout is four files:

- encoder.json (vocab.json)  token string -> id, 50257 entries ("Ġthe" is " the": lesson 01)
- vocab.bpe (merges.txt)     "#version: 0.2", then 50000 merges "left right", best first (lesson 03)
- config.json                the sizes: n_layer, n_embd, n_head, n_positions, vocab_size, ...
- model.safetensors          8 bytes little-endian header length N, N bytes of JSON
                             {name: {dtype, shape, data_offsets}}, then the raw tensor bytes

Here we parse the safetensors header with struct + json, cut each tensor out of the byte buffer
with np.frombuffer, and check the result against minigpt2.weights.safetensors and, where installed, the
`safetensors` package itself. The vocabulary files are checked against their published sizes.

    python -m lessons.l00_files [--fast] [--model auto|random|FOLDER]
"""

import json
import struct

import numpy as np

from lessons._common import (check, check_equal, check_true, fixture, model_folder, parse_args,
                             run, skipped, title)
from minigpt2.tokenizer import PACKAGE_VOCAB_DIR

# Sizes asserted by LLMs-from-scratch's tests (ch02/ch05 download checks) for OpenAI's files.
PUBLISHED_SIZES = {"encoder.json": 1042301, "vocab.bpe": 456318}
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}   # (BF16: see safetensors.py)


def read_safetensors_by_hand(path):
    """{name: array} from the raw bytes: the whole format in a dozen lines."""
    data = open(path, "rb").read()
    (header_len,) = struct.unpack("<Q", data[:8])                      # u64, little-endian
    header = json.loads(data[8:8 + header_len])                         # the JSON table of contents
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + header_len:]                            # the tensor bytes
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]                              # relative to the body
        array = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return header_len, header, tensors


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("encoder.json and vocab.bpe (the package copy of OpenAI's files)")
    sizes = {name: (PACKAGE_VOCAB_DIR / name).stat().st_size for name in PUBLISHED_SIZES}
    encoder = json.loads((PACKAGE_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (PACKAGE_VOCAB_DIR / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:-1]]         # header first, "" last
    print(f"sizes: {sizes}")
    print(f"encoder.json: {len(encoder)} entries; first {list(encoder.items())[:5]}; "
          f"last {list(encoder.items())[-3:]}")
    print(f"vocab.bpe: first line {lines[0]!r}; {len(merges)} merges; first five {merges[:5]}")
    print(f"id 262 is {[t for t, i in encoder.items() if i == 262]} (' the', the first merged word)")

    title("config.json")
    folder, description = model_folder(args)
    if folder is None:
        folder, _ = fixture("tiny")
        description = f"the transformers-made fixture {folder.name} (random weights)"
    print(f"[model] reading {description}")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "activation_function",
                "layer_norm_epsilon"):
        print(f"  {key:20s} {config.get(key)}")

    title("model.safetensors, by hand")
    path = folder / "model.safetensors"
    header_len, header, tensors = read_safetensors_by_hand(path)
    print(f"{path.stat().st_size} bytes; header {header_len} bytes; {len(tensors)} tensors")
    ordered = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    for name, info in ordered[:6]:
        print(f"  {name:28s} {info['dtype']} {str(info['shape']):14s} bytes {info['data_offsets']}")
    print(f"  ... {len(ordered) - 6} more")
    n_params = sum(a.size for a in tensors.values())
    # a GPT2LMHeadModel's state_dict names start with "transformer."; the hub's files do not
    wte_name = "wte.weight" if "wte.weight" in tensors else "transformer.wte.weight"
    print(f"{n_params:,} numbers; {wte_name} {tensors[wte_name].shape}; no lm_head: it is wte (tied)")

    title("checks")
    check_equal("encoder.json / vocab.bpe sizes vs LLMs-from-scratch's asserted sizes", sizes, PUBLISHED_SIZES)
    check_equal("50257 tokens, 50000 merges (GPT-2 paper: 50,257 vocabulary)", [len(encoder), len(merges)],
                [50257, 50000])
    check_equal("<|endoftext|> is the last id", encoder["<|endoftext|>"], 50256)
    offsets = [info["data_offsets"] for _, info in ordered]
    check_true("tensors tile the data section (no gap, no overlap)",
               all(a[1] == b[0] for a, b in zip(offsets, offsets[1:])) and offsets[0][0] == 0
               and offsets[-1][1] == path.stat().st_size - 8 - header_len)
    check_equal("config.json sizes fit the tensors (wte is [vocab_size, n_embd])",
                list(tensors[wte_name].shape), [config["vocab_size"], config["n_embd"]])

    from minigpt2.config import GPT2Config
    library_config = GPT2Config.from_pretrained(folder)
    keys = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon"]
    check_equal("config.json as read by json == minigpt2 GPT2Config.from_pretrained",
                [config[k] for k in keys], [getattr(library_config, k) for k in keys])
    from minigpt2.weights.safetensors import load_file
    library = load_file(path)
    check_equal("same tensor names as minigpt2.weights.safetensors", sorted(tensors), sorted(library))
    check("every tensor == minigpt2.weights.safetensors.load_file",
          np.concatenate([tensors[n].ravel().astype(np.float32) for n in sorted(tensors)]),
          np.concatenate([library[n].ravel().astype(np.float32) for n in sorted(tensors)]), tol=0)
    try:
        from safetensors.numpy import load_file as reference_load
    except ImportError:
        skipped("the `safetensors` package is not installed: no independent reader to compare with")
        return 0
    reference = reference_load(str(path))
    check("every tensor == the safetensors package (Hugging Face's reader)",
          np.concatenate([tensors[n].ravel().astype(np.float32) for n in sorted(tensors)]),
          np.concatenate([reference[n].ravel().astype(np.float32) for n in sorted(tensors)]), tol=0)
    return 0


if __name__ == "__main__":
    run(main)
