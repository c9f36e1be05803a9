"""Read OpenAI's GPT-2 release (TensorFlow 1 checkpoints) with the standard library and NumPy.

A TF checkpoint ``model.ckpt`` is a "tensor bundle" of two kinds of files:

  model.ckpt.index                 a table (LevelDB's SSTable layout): sorted keys -> values
  model.ckpt.data-00000-of-00001   the tensors' raw little-endian bytes, one after another

The index, read from the end:

  footer (last 48 bytes)   metaindex handle, index handle (each varint offset + varint size),
                           zero padding to 40 bytes, then the magic 0xdb4775248b80fb57 (8 bytes LE)
  index block              one entry per data block: key >= the block's last key, value = its handle
  data blocks              the entries themselves. Entry = varint shared, varint non_shared,
                           varint value_length, key[shared:] bytes, value bytes; a key repeats the
                           first `shared` bytes of the previous one (prefix compression). After the
                           entries: restart offsets (uint32 each, where shared = 0) and their count.
  every block              is followed by 1 byte compression type (0 = none) and 4 bytes masked crc32c

The values are protobuf messages (tensorflow/core/protobuf/tensor_bundle.proto), decoded here
field by field: the key "" holds a BundleHeaderProto (num_shards = 1, endianness = 2), every
other key is a tensor name whose BundleEntryProto says dtype = 1, shape = 2, shard_id = 3,
offset = 4, size = 5, crc32c = 6 (masked, of the tensor's bytes), slices = 7.

Every tensor's crc32c is checked when it is read (``verify_crc=True``, the default): about 3 s
for the 500 MB of 124M with the NumPy-vectorised ``crc32c`` below, where a byte loop in Python
would take minutes. ``verify_crc=False`` skips it (the blocks of the index are always checked).

Anything we do not expect (a compressed block, an unknown dtype, a sliced tensor, bytes past
the end of a shard, a size that does not match the shape, a bad checksum) is a ValueError naming
the file and the tensor. ``load_openai_release(folder)`` turns the release into a GPT2Config and
the weights under Hugging Face's names.
"""

import json
import os
import re
from dataclasses import dataclass

import numpy as np

from minigpt2.config import GPT2Config

# ---------------------------------------------------------------- crc32c (Castagnoli)

CRC32C_POLY = 0x82F63B78            # 0x1EDC6F41 bit-reversed: the register shifts right


def _make_crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32C_POLY if crc & 1 else 0)
        table.append(crc)
    return table


CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.array(CRC_TABLE, dtype=np.uint32)


def crc32c_bytewise(data, crc=0):
    """crc32c of `data`, one byte at a time: the textbook loop (slow, ~1 MB/s)."""
    register = crc ^ 0xFFFFFFFF
    for byte in bytes(data):
        register = CRC_TABLE[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def crc32c(data, crc=0):
    """crc32c of `data` (bytes or a uint8 array), the same number as crc32c_bytewise, fast.

    The CRC register is linear over GF(2), so the bytes are cut into `lanes` rows of equal
    length, all rows run the loop above at once (one NumPy step per column), and the rows'
    registers are chained: moving a register over L bytes is the register moved over L zero
    bytes (a fixed 32x32 bit matrix, applied with four 256-entry tables) xor the row's own.
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    register = crc ^ 0xFFFFFFFF
    while len(buf) >= 4096:
        lanes = min(1 << 16, len(buf) // 64)
        length = len(buf) // lanes
        rows = buf[:lanes * length].reshape(lanes, length)      # [lanes, length]
        registers = np.zeros(lanes, dtype=np.uint32)
        registers[0] = register
        for start in range(0, length, 256):
            columns = np.ascontiguousarray(rows[:, start:start + 256].T)   # [<=256, lanes]
            for column in columns:
                registers = _CRC_TABLE_NP[(registers ^ column) & 0xFF] ^ (registers >> 8)
        shift = _zero_bytes_tables(length)
        register = int(registers[0])
        for row_register in registers[1:].tolist():
            register = (shift[0][register & 0xFF] ^ shift[1][(register >> 8) & 0xFF] ^
                        shift[2][(register >> 16) & 0xFF] ^ shift[3][register >> 24] ^ row_register)
        buf = buf[lanes * length:]
    for byte in buf.tolist():                                    # the last < 4096 bytes
        register = CRC_TABLE[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def _zero_bytes_tables(length):
    """Four 256-entry tables: register moved over `length` zero bytes = xor of table[k][byte k]."""
    columns = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))   # one register per bit
    for _ in range(length):
        columns = _CRC_TABLE_NP[columns & 0xFF] ^ (columns >> 8)
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1                   # [256, 8]
    return [np.bitwise_xor.reduce(np.where(bits == 1, columns[8 * k:8 * k + 8], 0).astype(np.uint32),
                                  axis=1).tolist() for k in range(4)]


def mask_crc(crc):
    """LevelDB's masked crc, stored so that a crc of data holding crcs is not degenerate."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def unmask_crc(masked):
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------- protobuf, by hand

def read_varint(buf, pos, where="varint"):
    """(value, next position) of the base-128 varint at buf[pos]: 7 bits a byte, low bits first."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError(f"{where}: varint runs past the end of its data")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if byte < 0x80:
            return value, pos


def parse_proto(buf, where):
    """[(field number, value)] of a protobuf message: ints for varint/fixed fields, bytes otherwise."""
    fields, pos = [], 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos, where)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:                                   # varint
            value, pos = read_varint(buf, pos, where)
        elif wire_type in (1, 5):                            # fixed64 / fixed32, little-endian
            width = 8 if wire_type == 1 else 4
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire_type == 2:                                 # length-delimited: bytes, sub-message
            length, pos = read_varint(buf, pos, where)
            value = bytes(buf[pos:pos + length])
            pos += length
        else:
            raise ValueError(f"{where}: unexpected protobuf wire type {wire_type} (field {number})")
        if pos > len(buf):
            raise ValueError(f"{where}: protobuf field {number} runs past the end of its data")
        fields.append((number, value))
    return fields


# ---------------------------------------------------------------- the SSTable (.index)

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5          # compression type byte + masked crc32c


def read_footer(data, path):
    """(metaindex handle, index handle), each (offset, size), from the last 48 bytes."""
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise ValueError(f"{path}: not a TensorFlow checkpoint index (no table magic at the end; "
                         "truncated or not an .index file)")
    footer = data[-FOOTER_SIZE:]
    pos, handles = 0, []
    for _ in range(2):
        offset, pos = read_varint(footer, pos, f"{path} footer")
        size, pos = read_varint(footer, pos, f"{path} footer")
        handles.append((offset, size))
    return handles[0], handles[1]


def read_block(data, handle, path):
    """The contents of the block at `handle` = (offset, size), its trailer checked."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise ValueError(f"{path}: block at {offset} (+{size} bytes) runs past the end of the file")
    block = data[offset:offset + size]
    compression = data[offset + size]
    if compression != 0:
        raise ValueError(f"{path}: block at {offset} is compressed (type {compression}); "
                         "only uncompressed checkpoints are read")
    stored = int.from_bytes(data[offset + size + 1:offset + size + 5], "little")
    if unmask_crc(stored) != crc32c(data[offset:offset + size + 1]):     # contents + type byte
        raise ValueError(f"{path}: block at {offset} fails its crc32c check (damaged file)")
    return block


def block_entries(block, path):
    """[(key, value)] of one block, undoing the prefix compression of the keys."""
    where = f"{path} block"
    if len(block) < 4:
        raise ValueError(f"{where}: too short for its restart count")
    n_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * n_restarts              # entries stop where the restart array starts
    if end < 0:
        raise ValueError(f"{where}: restart count {n_restarts} does not fit the block")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = read_varint(block, pos, where)
        non_shared, pos = read_varint(block, pos, where)
        value_length, pos = read_varint(block, pos, where)
        if shared > len(key) or pos + non_shared + value_length > end:
            raise ValueError(f"{where}: entry at {pos} does not fit (damaged index)")
        key = key[:shared] + bytes(block[pos:pos + non_shared])
        pos += non_shared
        entries.append((key, bytes(block[pos:pos + value_length])))
        pos += value_length
    return entries


def read_table(path):
    """{key bytes: value bytes} of an SSTable file: footer -> index block -> each data block."""
    with open(path, "rb") as f:
        data = f.read()
    _, index_handle = read_footer(data, path)
    table = {}
    for _, handle_bytes in block_entries(read_block(data, index_handle, path), path):
        offset, pos = read_varint(handle_bytes, 0, f"{path} index")
        size, _ = read_varint(handle_bytes, pos, f"{path} index")
        table.update(block_entries(read_block(data, (offset, size), path), path))
    return table


# ---------------------------------------------------------------- bundle entries

# tensorflow/core/framework/types.proto DataType -> NumPy (little-endian). Others are refused.
TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
             17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: a BundleEntryProto, decoded."""
    name: str
    dtype: np.dtype
    shape: tuple
    shard_id: int
    offset: int
    size: int
    crc32c: int         # unmasked


def parse_bundle_entry(name, value, path):
    where = f"{path}: tensor {name!r}"
    fields = dict(parse_proto(value, where))
    if 7 in fields:
        raise ValueError(f"{where} is stored in slices (partitioned variable); not supported")
    dtype_code = fields.get(1, 0)
    if dtype_code not in TF_DTYPES:
        raise ValueError(f"{where} has TensorFlow dtype {dtype_code}, which this reader does not know")
    shape = []
    for number, dim in parse_proto(fields.get(2, b""), where):       # TensorShapeProto
        if number == 3 and dim:
            raise ValueError(f"{where} has an unknown rank")
        if number == 2:
            shape.append(dict(parse_proto(dim, where)).get(1, 0))      # Dim.size
    if 6 not in fields:
        raise ValueError(f"{where} has no crc32c")
    return TensorEntry(name, np.dtype(TF_DTYPES[dtype_code]), tuple(shape), fields.get(3, 0),
                       fields.get(4, 0), fields.get(5, 0), unmask_crc(fields[6]))


class TFCheckpoint:
    """A TF tensor bundle ``prefix`` (``prefix.index`` + ``prefix.data-*``), data shards memory-mapped.

    ``keys()``, ``entry(name)``, ``get(name)`` -> a read-only array (a view into the map),
    its crc32c checked first unless ``verify_crc=False`` (checking reads every byte once).
    """

    def __init__(self, prefix, verify_crc=True):
        self.prefix = os.fspath(prefix)
        self.index_path = self.prefix + ".index"
        self.verify_crc = verify_crc
        table = read_table(self.index_path)
        if b"" not in table:
            raise ValueError(f"{self.index_path}: no bundle header (the entry with the empty key)")
        header = dict(parse_proto(table.pop(b""), f"{self.index_path}: header"))
        if header.get(2, 0) != 0:
            raise ValueError(f"{self.index_path}: big-endian bundle; only little-endian is read")
        self.num_shards = header.get(1, 1)
        self.entries = {}
        for key, value in table.items():
            name = key.decode("utf-8")
            self.entries[name] = parse_bundle_entry(name, value, self.index_path)
        self._shards = {}

    def keys(self):
        return list(self.entries)

    def entry(self, name):
        return self.entries[name]

    def shard_path(self, shard_id):
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}"

    def _shard(self, shard_id):
        if shard_id not in self._shards:
            path = self.shard_path(shard_id)
            if not os.path.isfile(path):
                raise ValueError(f"{self.index_path}: data shard {path} is missing")
            size = os.path.getsize(path)
            self._shards[shard_id] = (np.memmap(path, dtype=np.uint8, mode="r") if size
                                      else np.zeros(0, np.uint8))
        return self._shards[shard_id]

    def get(self, name):
        e = self.entries[name]
        path = self.shard_path(e.shard_id)
        where = f"{path}: tensor {name!r}"
        if not 0 <= e.shard_id < self.num_shards:
            raise ValueError(f"{self.index_path}: tensor {name!r} is in shard {e.shard_id}, "
                             f"but the bundle has {self.num_shards}")
        expected = int(np.prod(e.shape, dtype=np.int64)) * e.dtype.itemsize
        if e.size != expected:
            raise ValueError(f"{where}: shape {list(e.shape)} of {e.dtype} needs {expected} bytes, "
                             f"the index says {e.size}")
        shard = self._shard(e.shard_id)
        if e.offset + e.size > len(shard):
            raise ValueError(f"{where}: bytes {e.offset}..{e.offset + e.size} run past the end of the "
                             f"shard ({len(shard)} bytes; truncated?)")
        raw = shard[e.offset:e.offset + e.size]                       # [size] uint8, no copy
        if self.verify_crc and crc32c(raw) != e.crc32c:
            raise ValueError(f"{where}: crc32c mismatch (damaged data, or an index from another file)")
        return raw.view(e.dtype).reshape(e.shape)


# ---------------------------------------------------------------- OpenAI's release

HPARAMS_NAME = "hparams.json"
HPARAMS_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


def checkpoint_prefix(folder):
    """The bundle prefix of a folder: what its ``checkpoint`` file names, else ``model.ckpt``."""
    folder = os.fspath(folder)
    name = "model.ckpt"
    state = os.path.join(folder, "checkpoint")
    if os.path.isfile(state):      # text protobuf: model_checkpoint_path: "model.ckpt"
        found = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', open(state, encoding="utf-8").read(), re.M)
        if found:
            name = os.path.basename(found.group(1))      # a path written elsewhere: use the file name
    return os.path.join(folder, name)


def is_openai_release(folder):
    """True for a folder with hparams.json and a TF checkpoint index, and no config.json
    (a converted folder, which may keep hparams.json, is the Hugging Face folder it now is)."""
    folder = os.fspath(folder)
    return (os.path.isfile(os.path.join(folder, HPARAMS_NAME))
            and not os.path.isfile(os.path.join(folder, "config.json"))
            and os.path.isfile(checkpoint_prefix(folder) + ".index"))


def config_from_hparams(path):
    """hparams.json (n_vocab, n_ctx, n_embd, n_head, n_layer) -> GPT2Config."""
    with open(path, encoding="utf-8") as f:
        try:
            hparams = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in HPARAMS_KEYS if not isinstance(hparams.get(k), int)]
    if missing:
        raise ValueError(f"{path}: needs integer {', '.join(missing)}")
    return GPT2Config(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"],
                      n_embd=hparams["n_embd"], n_head=hparams["n_head"], n_layer=hparams["n_layer"],
                      # <|endoftext|> is GPT-2's last id (50256 of 50257)
                      bos_token_id=hparams["n_vocab"] - 1, eos_token_id=hparams["n_vocab"] - 1)


# model/h3/attn/c_attn/w -> h.3.attn.c_attn.weight; g/b of a norm and w/b of a linear
_OPENAI_NAME = re.compile(r"model/(?:h(\d+)/)?((?:ln_1|ln_2|ln_f|attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj))/([gwb])")
_SUFFIX = {"g": "weight", "w": "weight", "b": "bias"}


def hf_name(openai_name):
    """OpenAI's variable name -> Hugging Face's tensor name, or None for a name GPT-2 does not have."""
    if openai_name in ("model/wte", "model/wpe"):
        return openai_name[len("model/"):] + ".weight"
    found = _OPENAI_NAME.fullmatch(openai_name)
    if not found:
        return None
    layer, module, kind = found.groups()
    norm = module.startswith("ln")                  # norms have g, b; linears w, b
    if (layer is None) != (module == "ln_f") or kind == ("w" if norm else "g"):
        return None
    prefix = f"h.{layer}." if layer is not None else ""
    return prefix + module.replace("/", ".") + "." + _SUFFIX[kind]


def openai_shapes(config):
    """{OpenAI variable name: shape} of every weight of a release with these hparams."""
    c, v = config.n_embd, config.vocab_size
    shapes = {"model/wte": (v, c), "model/wpe": (config.n_positions, c)}
    for i in range(config.n_layer):
        for norm in ("ln_1", "ln_2"):
            shapes.update({f"model/h{i}/{norm}/g": (c,), f"model/h{i}/{norm}/b": (c,)})
        for linear, n_in, n_out in (("attn/c_attn", c, 3 * c), ("attn/c_proj", c, c),
                                    ("mlp/c_fc", c, 4 * c), ("mlp/c_proj", 4 * c, c)):
            shapes.update({f"model/h{i}/{linear}/w": (1, n_in, n_out), f"model/h{i}/{linear}/b": (n_out,)})
    shapes.update({"model/ln_f/g": (c,), "model/ln_f/b": (c,)})
    return shapes


def load_openai_release(folder, verify_crc=True):
    """(GPT2Config, {HF name: float32 array}) of an OpenAI release folder.

    Every variable is checked against hparams.json by name and shape (a missing, unknown or
    mis-shaped one is a ValueError naming the file). Conv weights [1, n_in, n_out] lose their
    leading 1 and are then exactly HF's Conv1D [n_in, n_out].
    """
    folder = os.fspath(folder)
    config = config_from_hparams(os.path.join(folder, HPARAMS_NAME))
    checkpoint = TFCheckpoint(checkpoint_prefix(folder), verify_crc=verify_crc)
    source = f"{checkpoint.index_path} with {HPARAMS_NAME} (n_layer={config.n_layer}, n_embd={config.n_embd})"
    shapes = openai_shapes(config)
    missing = [name for name in shapes if name not in checkpoint.entries]
    if missing:
        raise ValueError(f"{source}: missing variable {missing[0]!r}; do the files belong together?")
    weights = {}
    for name in checkpoint.keys():
        if name not in shapes:
            raise ValueError(f"{source}: variable {name!r} is not a weight of this GPT-2")
        array = checkpoint.get(name)                         # shape agrees with its bytes, crc checked
        if array.shape != shapes[name]:
            raise ValueError(f"{source}: variable {name!r} has shape {list(array.shape)}, "
                             f"expected {list(shapes[name])}")
        if name.endswith("/w"):
            array = array[0]                                         # [1, n_in, n_out] -> [n_in, n_out]
        weights[hf_name(name)] = array if array.dtype == np.float32 else array.astype(np.float32)
    return config, weights
