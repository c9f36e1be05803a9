"""Lesson 17: OpenAI's original release, a TensorFlow checkpoint, read by hand.

OpenAI published GPT-2 as TensorFlow 1 checkpoints: model.ckpt.index (a LevelDB table of
tensor name -> protobuf entry) and model.ckpt.data-00000-of-00001 (the raw float32 bytes), next
to hparams.json, encoder.json and vocab.bpe. Here we take the index apart with struct and a
varint loop (footer, index block, data block with prefix-compressed keys), decode the protobuf
entries field by field, cut the tensors out of the data file, check their crc32c, rename them to
Hugging Face's names and compute the first logits. The prose is in l17_openai_release.md.

By default the folder is tests/fixtures/openai_tiny, written by TensorFlow's own Saver; its
expected.npz holds what TensorFlow's reader gives back. --release FOLDER reads another, such as
`python download_weights.py 124M --source openai`'s.

    python -m lessons.l17_openai_release [--fast] [--release FOLDER]
"""

import json
import struct
from pathlib import Path

import numpy as np

from lessons._common import REPO_ROOT, check, check_equal, check_true, parse_args, run, skipped, title

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "openai_tiny"
MAGIC = 0xDB4775248B80FB57            # the last 8 bytes of every LevelDB table
FLOAT32 = 1                           # tensorflow DataType DT_FLOAT


def varint(buf, pos):
    """7 bits a byte, low bits first; a set top bit means 'more bytes follow'."""
    value = shift = 0
    while True:
        byte = buf[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def proto_fields(buf):
    """{field number: value} of a protobuf message: tag = number << 3 | wire type."""
    fields, pos = {}, 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        if tag & 7 == 0:                                          # varint
            fields[tag >> 3], pos = varint(buf, pos)
        elif tag & 7 == 5:                                        # fixed32
            fields[tag >> 3], pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif tag & 7 == 2:                                        # length-delimited: a sub-message
            length, pos = varint(buf, pos)
            fields.setdefault(tag >> 3, []).append(buf[pos:pos + length])
            pos += length
        else:
            raise ValueError(f"wire type {tag & 7} is not used by tensor bundles")
    return fields


def block_entries(block):
    """[(key, value, shared)] of one block; each key reuses `shared` bytes of the one before."""
    n_restarts = struct.unpack("<I", block[-4:])[0]
    end, pos, key, out = len(block) - 4 - 4 * n_restarts, 0, b"", []
    while pos < end:
        shared, pos = varint(block, pos)
        non_shared, pos = varint(block, pos)
        value_length, pos = varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        out.append((key, block[pos + non_shared:pos + non_shared + value_length], shared))
        pos += non_shared + value_length
    return out


def crc32c(data):
    """Castagnoli CRC, bit by bit (slow; minigpt2.weights.tf_checkpoint has a fast one)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def unmask(masked):
    """LevelDB stores crcs rotated and offset, so that a crc over data holding crcs stays strong."""
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def openai_to_hf(name):
    """model/h0/attn/c_attn/w -> h.0.attn.c_attn.weight (g, w -> weight; b -> bias)."""
    parts = name.removeprefix("model/").split("/")
    if parts[0].startswith("h") and parts[0][1:].isdigit():
        parts[0] = "h." + parts[0][1:]
    if len(parts) == 1:                                           # wte, wpe
        return parts[0] + ".weight"
    return ".".join(parts[:-1]) + "." + {"g": "weight", "w": "weight", "b": "bias"}[parts[-1]]


def main(argv=None):
    args = parse_args(__doc__, argv, lambda p: p.add_argument("--release", default=str(FIXTURE)))
    folder = Path(args.release)
    index = (folder / "model.ckpt.index").read_bytes()

    title("the footer: the last 48 bytes")
    footer = index[-48:]
    check_equal("the table magic", struct.unpack("<Q", footer[-8:])[0], MAGIC)
    meta_offset, pos = varint(footer, 0)
    meta_size, pos = varint(footer, pos)
    index_offset, pos = varint(footer, pos)
    index_size, pos = varint(footer, pos)
    print(f"{len(index)} bytes; metaindex block at {meta_offset} (+{meta_size}), "
          f"index block at {index_offset} (+{index_size})")

    title("the index block -> the data blocks -> (key, value) entries")
    entries = {}
    for last_key, handle, _ in block_entries(index[index_offset:index_offset + index_size]):
        offset, p = varint(handle, 0)
        size, _ = varint(handle, p)
        kind, stored_crc = index[offset + size], struct.unpack_from("<I", index, offset + size + 1)[0]
        print(f"data block at {offset} (+{size}), keys up to {last_key!r}, compression {kind}")
        check_true(f"block at {offset}: uncompressed, crc32c of contents + type byte matches",
                   kind == 0 and unmask(stored_crc) == crc32c(index[offset:offset + size + 1]))
        block = block_entries(index[offset:offset + size])
        for key, value, shared in block[:5]:
            print(f"  shared {shared:2d}  key {key.decode()!r:32s} value {value[:12].hex(' ')} ...")
        entries.update({key: value for key, value, _ in block})

    title("the protobuf values: the header (key '') and one BundleEntryProto")
    header = proto_fields(entries.pop(b""))
    print(f"BundleHeaderProto: num_shards (1) = {header.get(1)}, endianness (2) = {header.get(2, 0)} (little)")
    name = "model/wte"
    wte = proto_fields(entries[name.encode()])
    dims = [proto_fields(d)[1] for d in proto_fields(wte[2][0]).get(2, [])]
    print(f"{name}: dtype (1) = {wte[1]}, shape (2) = {dims}, shard (3) = {wte.get(3, 0)}, "
          f"offset (4) = {wte.get(4, 0)}, size (5) = {wte[5]}, masked crc32c (6) = {wte[6]:#010x}")

    title("the tensors: bytes of the data file, viewed as little-endian float32")
    data = (folder / "model.ckpt.data-00000-of-00001").read_bytes()
    tensors, well_formed, crc_ok = {}, [], []
    for key, value in entries.items():
        f = proto_fields(value)
        shape = [proto_fields(d)[1] for d in proto_fields(f[2][0]).get(2, [])]
        start, size = f.get(4, 0), f[5]
        well_formed.append(f[1] == FLOAT32 and f.get(3, 0) == 0 and size == 4 * int(np.prod(shape))
                           and start + size <= len(data))
        tensors[key.decode()] = np.frombuffer(data, "<f4", size // 4, start).reshape(shape)
        if size <= (4096 if args.fast else 65536):               # the bitwise crc is slow: small ones
            crc_ok.append(unmask(f[6]) == crc32c(data[start:start + size]))
    check_true("every entry: float32, shard 0, its size fits its shape and the file", all(well_formed))
    print(f"{len(tensors)} tensors, {sum(t.size for t in tensors.values()):,} numbers; "
          f"wte {tensors[name].shape}, h0/attn/c_attn/w {tensors['model/h0/attn/c_attn/w'].shape}")
    check_true(f"crc32c of {len(crc_ok)} tensors == their entries' (unmasked)", all(crc_ok) and crc_ok)

    title("Hugging Face names; the conv weights [1, n_in, n_out] lose their leading 1")
    hparams = json.loads((folder / "hparams.json").read_text())
    weights = {openai_to_hf(k): (v[0] if k.endswith("/w") else v) for k, v in tensors.items()}
    for k in ("model/h0/ln_1/g", "model/h0/attn/c_attn/w", "model/ln_f/b"):
        print(f"  {k:26s} {str(tensors[k].shape):14s} -> {openai_to_hf(k):24s} {weights[openai_to_hf(k)].shape}")

    title("the first logits")
    from minigpt2 import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_embd=hparams["n_embd"],
                        n_head=hparams["n_head"], n_layer=hparams["n_layer"])
    ids = np.array([[1, 5, 9, 3]]) % hparams["n_vocab"]
    logits = GPT2LMHeadModel(config, weights, backend="numpy")(ids).logits     # [1, 4, n_vocab]
    print(f"ids {ids[0].tolist()} -> logits {logits.shape}; last row starts {np.round(logits[0, -1, :4], 4)}")

    title("checks")
    library = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")(ids).logits
    check("logits == minigpt2's from_pretrained(release folder)", logits, library, tol=0)
    if (folder / "expected.npz").is_file():
        with np.load(folder / "expected.npz") as expected:
            check_equal("the same tensor names as TensorFlow's reader", sorted(tensors), sorted(expected.files))
            check("every tensor == TensorFlow's reader (expected.npz)",
                  np.concatenate([tensors[k].ravel() for k in sorted(tensors)]),
                  np.concatenate([expected[k].ravel() for k in sorted(tensors)]), tol=0)
    try:
        import torch
        import transformers
    except ImportError:
        skipped("transformers is not installed: no independent model to compare the logits with")
        return 0
    hf_config = transformers.GPT2Config(bos_token_id=config.vocab_size - 1, eos_token_id=config.vocab_size - 1,
                                        **{k: getattr(config, k) for k in
                                           ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer")})
    reference = transformers.GPT2LMHeadModel(hf_config).eval()            # eval: no dropout
    missing, unexpected = reference.transformer.load_state_dict(
        {k: torch.tensor(np.array(v)) for k, v in weights.items()}, strict=False)
    check_true("transformers took every tensor, and needed no other",
               not unexpected and all(k.endswith(("attn.bias", "masked_bias")) for k in missing))
    with torch.no_grad():
        check("logits == transformers' GPT2LMHeadModel on the same weights",
              logits, reference(torch.tensor(ids)).logits.numpy(), tol=1e-5)
    return 0


if __name__ == "__main__":
    run(main)
