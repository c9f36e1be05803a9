"""Weights stored in fewer bytes: the PackedWeight format (bfloat16, float16, int8 rows).

Decoding one token reads every weight once, so its speed is set by the bytes per weight:
float32 4, bfloat16 / float16 2, int8 1 (plus one float32 scale per output channel).

* bfloat16: the top 16 bits of the float32 (round to nearest even): 8 exponent bits, 7 mantissa
  bits, the same range as float32, about 3 significant digits.
* float16: IEEE half, 10 mantissa bits (more precise than bfloat16), range up to 65504.
* int8: per output channel, q = round(w / s) with s = max|w| / 127 over that channel's inputs,
  so w ~ q * s (symmetric, weight-only).

A `PackedWeight` stands in for a float32 weight everywhere: `np.asarray(w)` dequantizes it (so the
numpy backend and any NumPy code still work, slowly), and the engine's kernels read the packed
bytes directly. Its rows are output channels, the layout the decode kernel streams. Converting
a model and saving or loading packed files is `minigpt2.quantize`'s job; this module is the format.
"""

import numpy as np

from minigpt2.weights.safetensors import bfloat16_to_float32, float32_to_bfloat16

DTYPES = ("float32", "bfloat16", "float16", "int8")
BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def aligned_empty(shape, dtype, alignment=64):
    """np.empty(shape, dtype) whose first byte is on an `alignment`-byte boundary (a cache line).

    AMX tile loads (engine/amx.py) of rows that straddle two cache lines are much slower than of
    aligned rows (BENCHMARKS.md); NumPy aligns large arrays to 16 bytes only.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    spare = np.empty(nbytes + alignment, dtype=np.uint8)
    skip = -spare.ctypes.data % alignment
    return spare[skip:skip + nbytes].view(dtype).reshape(shape)


# PackedWeight.pack converts this many float32 values at a time: 64 KB, inside L2, and its
# temporaries stay below malloc's 128 KB threshold for fresh pages from the OS (blocks of 256 KB
# made a process's first load 0.5 s slower, faulting in new pages for every temporary)
PACK_BLOCK_ELEMENTS = 1 << 14


class PackedWeight:
    """A weight matrix stored as bfloat16 / float16 / int8 rows, standing in for a float32 array.

    data [rows, cols] holds the packed values (uint16 bfloat16 bits, float16, or int8) and scale
    [rows] the int8 scales (None otherwise). The logical float32 matrix is dequant(data), or its
    transpose when `rows_are_outputs` (a linear layer's [n_in, n_out] weight stored one output
    per row). `w.T` swaps the two views without copying, so the tied embedding wte [v, c] and the
    LM head wte.T [c, v] share one packed array, as they share one float32 array.
    """

    ndim = 2
    dtype = np.dtype(np.float32)          # what it computes as

    def __init__(self, data, scale, storage, rows_are_outputs):
        if storage not in DTYPES[1:]:
            raise ValueError(f"storage must be one of {DTYPES[1:]}, got {storage!r}")
        self.data, self.scale, self.storage = data, scale, storage
        self.rows_are_outputs = rows_are_outputs

    @classmethod
    def pack(cls, weight, storage, rows_are_outputs=True):
        """Pack a float32 matrix. rows_are_outputs=True takes a linear layer's [n_in, n_out]
        weight and stores it one output per row; False stores the rows as they are (wte)."""
        if storage not in DTYPES[1:]:
            raise ValueError(f"storage must be one of {DTYPES[1:]}, got {storage!r}")
        weight = np.asarray(weight, dtype=np.float32)
        rows = weight.T if rows_are_outputs else weight                            # [rows, cols], a view
        data = aligned_empty(rows.shape, cls.DATA_DTYPES[storage])
        scale = np.empty(rows.shape[0], dtype=np.float32) if storage == "int8" else None
        # a block of rows at a time, small enough for the CPU's cache, so that the transpose and
        # the conversion's temporaries never travel through memory (bfloat16: 3.5x faster than
        # whole-matrix NumPy passes for GPT-2 124M)
        step = max(1, PACK_BLOCK_ELEMENTS // max(1, rows.shape[1]))
        for start in range(0, rows.shape[0], step):
            block = np.ascontiguousarray(rows[start:start + step])
            if storage == "bfloat16":
                data[start:start + step] = float32_to_bfloat16(block)
            elif storage == "float16":
                if np.abs(block).max(initial=0) > np.finfo(np.float16).max:
                    raise ValueError("float16 cannot hold this weight: a value exceeds 65504; use bfloat16")
                data[start:start + step] = block
            else:
                block_scale = (np.abs(block).max(axis=1, initial=0) / 127.0).astype(np.float32)   # [rows]
                safe = np.where(block_scale > 0, block_scale, 1.0).astype(np.float32)
                data[start:start + step] = np.clip(np.rint(block / safe[:, None]), -127, 127)
                scale[start:start + step] = block_scale
        return cls(data, scale, storage, rows_are_outputs)

    def rows_float32(self, index=slice(None)):
        """Dequantized rows of `data` (not of the logical matrix): [rows, cols] float32."""
        data = self.data[index]
        if self.storage == "bfloat16":
            return bfloat16_to_float32(data)
        if self.storage == "float16":
            return data.astype(np.float32)
        return data.astype(np.float32) * self.scale[index][:, None]

    # the dtype of `data` each storage holds (bfloat16: its bits, as uint16)
    DATA_DTYPES = {"bfloat16": np.dtype(np.uint16), "float16": np.dtype(np.float16), "int8": np.dtype(np.int8)}

    def check(self, name="weight", source="weights"):
        """Raise ValueError (naming `source` and `name`) unless data and scale are what the kernels
        read: 2-D data of the storage's dtype and, for int8, one float32 scale per row. The kernels
        do not check bounds, so a short scale would be read past its end."""
        data, expected = self.data, self.DATA_DTYPES[self.storage]
        if not isinstance(data, np.ndarray) or data.ndim != 2:
            raise ValueError(f"{source}: tensor {name!r} must be a 2-D array of packed {self.storage} "
                             f"rows, got shape {list(np.shape(data))}")
        if data.dtype != expected:
            raise ValueError(f"{source}: tensor {name!r} holds {self.storage} weights, so its data must be "
                             f"{expected}, got {data.dtype}")
        if self.storage != "int8":
            if self.scale is not None:
                raise ValueError(f"{source}: tensor {name!r} is {self.storage}; only int8 weights have a scale")
            return
        scale = self.scale
        if scale is None:
            raise ValueError(f"{source}: int8 tensor {name!r} has no scale (one float32 per row)")
        if not isinstance(scale, np.ndarray) or scale.dtype != np.float32 or scale.shape != data.shape[:1]:
            raise ValueError(f"{source}: the scale of int8 tensor {name!r} must be float32 of shape "
                             f"[{data.shape[0]}] (one per row), got {getattr(scale, 'dtype', type(scale).__name__)} "
                             f"of shape {list(np.shape(scale))}")

    @property
    def shape(self):
        rows, cols = self.data.shape
        return (cols, rows) if self.rows_are_outputs else (rows, cols)

    @property
    def nbytes(self):
        return self.data.nbytes + (self.scale.nbytes if self.scale is not None else 0)

    @property
    def T(self):
        return PackedWeight(self.data, self.scale, self.storage, not self.rows_are_outputs)

    def __array__(self, dtype=None, copy=None):
        """The logical float32 matrix (a new array)."""
        full = self.rows_float32()
        full = full.T if self.rows_are_outputs else full
        return full if dtype is None else full.astype(dtype)

    def __getitem__(self, index):
        """Rows of the logical matrix, dequantized: wte[input_ids] for the embedding lookup."""
        if self.rows_are_outputs:
            return np.asarray(self)[index]
        index = np.asarray(index)
        flat = self.rows_float32(index.reshape(-1))                            # [n, cols]
        return flat.reshape(*index.shape, flat.shape[-1])

    def __repr__(self):
        return f"PackedWeight({self.storage}, shape={self.shape}, {self.nbytes / 1e6:.1f} MB)"
