"""Read and write ``.safetensors`` files: a JSON header, then the raw little-endian tensor bytes.

The format (https://huggingface.co/docs/safetensors):

    [8 bytes]  N, the header length, unsigned little-endian
    [N bytes]  JSON: {"name": {"dtype": "F32", "shape": [768, 2304], "data_offsets": [begin, end]},
                      ..., "__metadata__": {"format": "pt"}}     (optional str -> str metadata)
    [rest]     the tensor bytes; offsets are relative to the end of the header

Reading memory-maps the file (numpy.memmap): no tensor is copied and nothing is read until it is
used, so opening a 500 MB checkpoint is instant. The header is checked strictly before any tensor
is handed out, so a truncated or corrupt file fails with a ValueError naming the file and the
tensor, never with a NumPy reshape traceback or garbage numbers. Nothing is ever unpickled.
"""

import json
import math
import os
import shutil
import struct

import numpy as np

MAX_HEADER_BYTES = 100 * 1024 * 1024   # the same cap as the reference implementation
MAX_DIMENSIONS = 64                    # NumPy's limit on an array's dimensions

# safetensors dtype -> NumPy dtype of the stored bytes. BF16 has no NumPy dtype: its bytes are
# viewed as uint16 and widened to float32 on request (bfloat16 is the top half of a float32).
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_NUMPY_TO_SAFETENSORS = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8", np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
}


def bfloat16_to_float32(bits):
    """uint16 bfloat16 bits -> float32 (exact: bfloat16 is the upper 16 bits of a float32)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(x):
    """float32 -> uint16 bfloat16 bits, rounding to nearest even (NaN stays NaN)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, (bits >> 16) | 0x0040, rounded).astype(np.uint16)


class SafetensorsFile:
    """One validated ``.safetensors`` file, memory-mapped read-only.

    ``f.keys()``, ``f.dtype(name)`` (the safetensors dtype string), ``f.shape(name)``,
    ``f.metadata`` and ``f.get(name, as_float32=False)``.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._entries, self.metadata, self._data_start = _read_header(self.path)
        data_size = os.path.getsize(self.path) - self._data_start
        # One read-only map over the data section; every tensor is a view into it.
        if data_size > 0:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._data_start,
                                   shape=(data_size,))
        else:
            self._data = np.zeros(0, dtype=np.uint8)

    def keys(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def dtype(self, name):
        return self._entries[name][0]

    def shape(self, name):
        return self._entries[name][1]

    def get(self, name, as_float32=False):
        """The tensor as a read-only array view into the file (no copy).

        BF16 tensors come back as their uint16 bits unless ``as_float32``. With ``as_float32``
        every floating tensor is returned as float32: F32 stays a zero-copy view, F16/BF16/F64
        are converted (one copy).
        """
        if name not in self._entries:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        dtype, shape, (begin, end) = self._entries[name]
        array = self._data[begin:end].view(DTYPES[dtype]).reshape(shape)
        array = np.asarray(array)          # a plain ndarray view (still backed by the map)
        array.flags.writeable = False
        if as_float32 and dtype in FLOAT_DTYPES and dtype != "F32":
            array = bfloat16_to_float32(array) if dtype == "BF16" else array.astype(np.float32)
        return array


def load_file(path, as_float32=False):
    """Read every tensor of a ``.safetensors`` file: {name: read-only array}, memory-mapped."""
    f = SafetensorsFile(path)
    return {name: f.get(name, as_float32=as_float32) for name in f.keys()}


def load_metadata(path):
    """The ``__metadata__`` dict of a file (empty if it has none)."""
    return dict(_read_header(os.fspath(path))[1])


def _read_header(path):
    """Parse and check the header. Returns ({name: (dtype, shape, (begin, end))}, metadata, data_start)."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; pass the .safetensors file inside it (or load the "
                         "folder with from_pretrained)")
    file_size = os.path.getsize(path)
    if file_size < 8:
        raise ValueError(f"{path}: not a safetensors file: {file_size} bytes, too short for the "
                         f"8-byte header length (truncated?)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header length {header_len} is larger than the "
                             f"{MAX_HEADER_BYTES}-byte limit (corrupt file?)")
        if 8 + header_len > file_size:
            raise ValueError(f"{path}: header says {header_len} bytes but the file has only "
                             f"{file_size - 8} after the length field (truncated?)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError besides JSONDecodeError: an integer of more than 4300 digits
        raise ValueError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object, got {type(header).__name__}")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")

    data_size = file_size - 8 - header_len
    entries = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: entry must have exactly dtype, shape, data_offsets; got {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"{where}: unknown dtype {dtype!r} (known: {sorted(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise ValueError(f"{where}: shape must be a list of non-negative ints, got {shape!r}")
        if len(shape) > MAX_DIMENSIONS:
            raise ValueError(f"{where}: shape has {len(shape)} dimensions; at most {MAX_DIMENSIONS} are possible")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_uint, offsets))
                or offsets[0] > offsets[1]):
            raise ValueError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                             f"got {offsets!r}")
        begin, end = offsets
        expected = math.prod(shape) * DTYPES[dtype].itemsize     # Python ints: no int64 overflow
        if end - begin != expected:
            raise ValueError(f"{where}: shape {shape} x {dtype} needs {expected} bytes but "
                             f"data_offsets [{begin}, {end}] hold {end - begin}")
        if end > data_size:
            raise ValueError(f"{where}: bytes [{begin}, {end}) lie past the end of the data "
                             f"({data_size} bytes; truncated file?)")
        entries[name] = (dtype, tuple(shape), (begin, end))

    # The tensors must tile the data section exactly: no gap, no overlap, nothing left over.
    position, previous = 0, None
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda e: e[1][2]):
        if begin != position:
            problem = "overlaps" if begin < position else "leaves a gap after"
            raise ValueError(f"{path}: tensor {name!r} at bytes [{begin}, {end}) {problem} "
                             f"{'the start of the data' if previous is None else repr(previous)}")
        position, previous = end, name
    if position != data_size:
        raise ValueError(f"{path}: {data_size - position} bytes after the last tensor belong to "
                         f"no tensor (corrupt file?)")
    return entries, metadata, 8 + header_len


def _is_uint(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def save_file(tensors, path, metadata=None, bf16=()):
    """Write {name: array} to ``path`` as safetensors (readable by the ``safetensors`` package).

    ``metadata`` is a str -> str dict; by default {"format": "pt"}, which transformers expects.
    Names listed in ``bf16`` are stored as BF16 (float arrays are rounded to nearest even).
    """
    metadata = {"format": "pt"} if metadata is None else dict(metadata)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("save_file: metadata must map strings to strings")
    bf16 = set(bf16)
    unknown = bf16 - set(tensors)
    if unknown:
        raise ValueError(f"save_file: bf16 names {sorted(unknown)} are not in tensors")

    header, arrays, offset = {}, [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"save_file: invalid tensor name {name!r}")
        array = np.asarray(tensors[name])
        if name in bf16:
            dtype = "BF16"
            array = array if array.dtype == np.uint16 else float32_to_bfloat16(array)
        elif array.dtype in _NUMPY_TO_SAFETENSORS:
            dtype = _NUMPY_TO_SAFETENSORS[array.dtype]
        else:
            raise ValueError(f"save_file: tensor {name!r} has dtype {array.dtype}, which "
                             f"safetensors cannot store")
        # little-endian, C order (not np.ascontiguousarray: it turns a 0-d scalar into shape [1])
        array = array.astype(DTYPES[dtype], order="C", copy=False)
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # pad with spaces so that the data starts 64-byte aligned (8 for the format; 64, a cache line,
    # so that packed weights memory-mapped back can be read by AMX tile loads, amx.py, without
    # straddling lines: GPT-2's tensor sizes are all multiples of 64 bytes)
    raw += b" " * (-(8 + len(raw)) % 64)
    # Write a temporary file next to `path`, then rename it over `path`. Opening `path` itself
    # with "wb" would truncate it first: tensors memory-mapped from that same file (load_file,
    # then save_file to the same path) would vanish mid-write (a bus error and an empty file),
    # and an interrupted write would leave half a file where the old one was.
    path = os.path.realpath(os.fspath(path))        # through a symlink: replace the file, keep the link
    if os.path.isdir(path):
        raise ValueError(f"save_file: {path} is a folder; pass the path of the .safetensors file to write")
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for array in arrays:
                f.write(memoryview(array.reshape(-1)).cast("B") if array.size else b"")
        if os.path.exists(path):
            shutil.copymode(path, temporary)         # keep the permissions of the file replaced
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
