"""Weights stored in fewer bytes, computed with in float32: bfloat16, float16, int8.

Decoding one token reads every weight once, so its speed is set by the bytes per weight:
float32 4, bfloat16 / float16 2, int8 1 (plus one float32 scale per output channel). The
activations, the sums and everything else stay float32; only the storage of the big matrices
(the four per block and the tied embedding / LM head) changes, converted once at load:

    model = GPT2LMHeadModel.from_pretrained(folder)
    convert_model(model, "bfloat16")          # or "float16", "int8"; in place, returns model
    save_converted(model, "gpt2-bf16")        # optional: later loads skip the conversion
    model = load_converted("gpt2-bf16")       # packed arrays memory-mapped, nothing converted

or, the way transformers spells it, in one call (see `resolve_dtype` for what `dtype` accepts):

    model = GPT2LMHeadModel.from_pretrained(folder, dtype="bfloat16")   # converts once at load
    model = GPT2LMHeadModel.from_pretrained("gpt2-bf16")                 # a save_converted folder

* bfloat16: the top 16 bits of the float32 (round to nearest even): 8 exponent bits, 7 mantissa
  bits, the same range as float32, about 3 significant digits.
* float16: IEEE half, 10 mantissa bits (more precise than bfloat16), range up to 65504.
* int8: per output channel, q = round(w / s) with s = max|w| / 127 over that channel's inputs,
  so w ~ q * s (symmetric, weight-only).

A `PackedWeight` stands in for a float32 weight everywhere: `np.asarray(w)` dequantizes it (so the
numpy backend and any NumPy code still work, slowly), and the numba kernels read the packed
bytes directly in the decode matrix-vector product. Its rows are output channels, the layout
that kernel streams; converting writes the new array anyway, so this layout costs nothing extra.
"""

import numpy as np

from .safetensors import bfloat16_to_float32, float32_to_bfloat16

DTYPES = ("float32", "bfloat16", "float16", "int8")
BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
# the short names llama.cpp / PyTorch users type; anything else must be spelled out
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_dtype(dtype):
    """The storage name (one of DTYPES) for from_pretrained's `dtype`, or None for "auto".

    Accepts the names in DTYPES, their short forms bf16 / fp16 / fp32, NumPy dtypes (np.float32,
    np.float16, np.int8, np.dtype("float16")) and torch dtypes (torch.bfloat16; torch itself is
    not imported). "auto" or None means "as stored": a save_converted folder keeps its packed
    type, an ordinary checkpoint loads as float32 (as transformers 5's default dtype="auto").
    """
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return None
    name = dtype
    if not isinstance(dtype, str):
        if type(dtype).__module__ == "torch":                 # torch.bfloat16 -> "bfloat16"
            name = str(dtype).removeprefix("torch.")
        else:
            try:
                name = np.dtype(dtype).name                    # np.float16 -> "float16"
            except TypeError:
                name = None
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (or bf16, fp16, fp32, 'auto', a NumPy dtype "
                         f"such as np.float16), got {dtype!r}")
    return name


def aligned_empty(shape, dtype, alignment=64):
    """np.empty(shape, dtype) whose first byte is on an `alignment`-byte boundary (a cache line).

    AMX tile loads (amx.py) of rows that straddle two cache lines ran 3.5x slower than of aligned
    rows; NumPy aligns large arrays to 16 bytes only.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    spare = np.empty(nbytes + alignment, dtype=np.uint8)
    skip = -spare.ctypes.data % alignment
    return spare[skip:skip + nbytes].view(dtype).reshape(shape)


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
        weight = np.asarray(weight, dtype=np.float32)
        rows = np.ascontiguousarray(weight.T if rows_are_outputs else weight)     # [rows, cols]
        scale = None
        if storage == "bfloat16":
            data = float32_to_bfloat16(rows)
        elif storage == "float16":
            if np.abs(rows).max(initial=0) > np.finfo(np.float16).max:
                raise ValueError("float16 cannot hold this weight: a value exceeds 65504; use bfloat16")
            data = rows.astype(np.float16)
        elif storage == "int8":
            scale = (np.abs(rows).max(axis=1) / 127.0).astype(np.float32)         # [rows]
            safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
            data = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
        else:
            raise ValueError(f"storage must be one of {DTYPES[1:]}, got {storage!r}")
        aligned = aligned_empty(data.shape, data.dtype)
        aligned[...] = data
        return cls(aligned, scale, storage, rows_are_outputs)

    def rows_float32(self, index=slice(None)):
        """Dequantized rows of `data` (not of the logical matrix): [rows, cols] float32."""
        data = self.data[index]
        if self.storage == "bfloat16":
            return bfloat16_to_float32(data)
        if self.storage == "float16":
            return data.astype(np.float32)
        return data.astype(np.float32) * self.scale[index][:, None]

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


_LINEAR_NAMES = ("c_attn", "attn_c_proj", "c_fc", "mlp_c_proj")


def convert_model(model, dtype):
    """Store the model's large matrices as `dtype` ("bfloat16", "float16", "int8"), in place.

    Converts the four linear weights of every block and the embedding wte (which the tied LM
    head shares); biases, layer norms and wpe stay float32 (they are small). The float32 values
    that were converted are no longer referenced, so a memory-mapped checkpoint's pages for them
    can be dropped by the OS. Returns the model. "float32" (or None / "auto") does nothing to a
    float32 model. `dtype` accepts what resolve_dtype does. A model already packed as another
    type is a ValueError: converting packed values again would compound the rounding.
    """
    dtype = resolve_dtype(dtype)
    body = getattr(model, "transformer", model)
    held = body.wte.storage if isinstance(body.wte, PackedWeight) else "float32"
    if dtype is None or dtype == held:
        return model
    if held != "float32":
        raise ValueError(f"the model already holds {held} weights; convert_model to {dtype} needs the "
                         f"float32 weights (load the original checkpoint again)")
    for block in body.h:
        for name in _LINEAR_NAMES:
            weight, bias = getattr(block, name)
            if not isinstance(weight, PackedWeight):
                setattr(block, name, (PackedWeight.pack(weight, dtype), bias))
    tied = getattr(model, "lm_head", None) is body.wte
    body.wte = PackedWeight.pack(body.wte, dtype, rows_are_outputs=False)        # [v, c] rows
    if tied:
        model.lm_head = body.wte
    elif getattr(model, "lm_head", None) is not None:
        model.lm_head = PackedWeight.pack(model.lm_head, dtype, rows_are_outputs=False)
    return model


def weight_bytes(model):
    """Bytes of weights the model holds (packed sizes for packed matrices)."""
    body = getattr(model, "transformer", model)
    seen, total = set(), 0

    def add(array):
        nonlocal total
        if array is not None and id(array) not in seen:
            seen.add(id(array))
            total += array.nbytes

    add(body.wte), add(body.wpe)
    for block in body.h:
        for name in ("ln_1", "ln_2") + _LINEAR_NAMES:
            for array in getattr(block, name):
                add(array)
    for array in body.ln_f:
        add(array)
    add(getattr(model, "lm_head", None))
    return total


# ---- saving and loading a converted model -----------------------------------------------------
# The file is a safetensors file that minigpt2 reads back without converting anything: packed
# matrices are stored as they sit in memory (one output channel per row for the block weights,
# wte as [v, c]), under "<name>.<dtype>" plus "<name>.scale" for int8; the small tensors keep
# their checkpoint names in float32. The metadata says {"minigpt2.dtype": dtype}. transformers
# cannot read it (the layout is ours); keep the original checkpoint for that.

_HF_LINEAR = dict(zip(_LINEAR_NAMES, ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")))


def save_converted(model, folder):
    """Write a converted GPT2LMHeadModel to folder/config.json + folder/model.safetensors."""
    import os
    from .safetensors import save_file

    body = model.transformer
    if not isinstance(body.wte, PackedWeight):
        raise ValueError("save_converted: the model is not converted (call convert_model first)")
    storage = body.wte.storage
    tensors = {"wpe.weight": body.wpe, "ln_f.weight": body.ln_f[0], "ln_f.bias": body.ln_f[1]}

    def put(name, weight):
        tensors[f"{name}.{storage}"] = weight.data.view(np.uint16) if storage != "int8" else weight.data
        if weight.scale is not None:
            tensors[f"{name}.scale"] = weight.scale

    for i, block in enumerate(body.h):
        for ln in ("ln_1", "ln_2"):
            tensors[f"h.{i}.{ln}.weight"], tensors[f"h.{i}.{ln}.bias"] = getattr(block, ln)
        for name, hf_name in _HF_LINEAR.items():
            weight, bias = getattr(block, name)
            put(f"h.{i}.{hf_name}.weight", weight)
            tensors[f"h.{i}.{hf_name}.bias"] = bias
    put("wte.weight", body.wte)
    if model.lm_head is not body.wte:
        put("lm_head.weight", model.lm_head)
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    # uint16 is stored as U16 (bfloat16 or float16 bits: the metadata says which)
    save_file({k: np.asarray(v) for k, v in tensors.items()}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "minigpt2", "minigpt2.dtype": storage})


def stored_dtype(folder):
    """The packed type of a folder written by save_converted ("bfloat16", "float16", "int8"), or
    None for anything else (an ordinary checkpoint, shards, no weights: the loader then says what
    is wrong). Reads only the header of folder/model.safetensors, the one file save_converted writes."""
    import os
    from .safetensors import load_metadata

    path = os.path.join(os.fspath(folder), "model.safetensors")
    if not os.path.isfile(path):
        return None
    storage = load_metadata(path).get("minigpt2.dtype")
    if storage is not None and storage not in DTYPES[1:]:
        raise ValueError(f"{path}: unknown 'minigpt2.dtype' {storage!r} in its metadata "
                         f"(expected one of {DTYPES[1:]})")
    return storage


def load_converted(folder, backend="numba", model_class=None):
    """Load a folder written by save_converted: the packed arrays stay memory-mapped (no copy).

    model_class: GPT2LMHeadModel (None, the default) or GPT2Model (the body alone).
    """
    import os
    from .checkpoints import expected_body_shapes
    from .config import GPT2Config
    from .model import GPT2LMHeadModel
    from .safetensors import SafetensorsFile

    model_class = GPT2LMHeadModel if model_class is None else model_class
    path = os.path.join(os.fspath(folder), "model.safetensors")
    f = SafetensorsFile(path)
    storage = f.metadata.get("minigpt2.dtype")
    if storage not in DTYPES[1:]:
        raise ValueError(f"{path} was not written by save_converted (no 'minigpt2.dtype' in its metadata)")
    config = GPT2Config.from_pretrained(folder)
    shapes = expected_body_shapes(config)

    def packed(name, rows_are_outputs):
        key = f"{name}.{storage}"
        if key not in f:
            raise ValueError(f"{path}: missing tensor {key!r}")
        data = f.get(key)
        data = data.view(np.float16) if storage == "float16" else data
        scale = f.get(f"{name}.scale") if storage == "int8" else None
        weight = PackedWeight(data, scale, storage, rows_are_outputs)
        if name in shapes and weight.shape != shapes[name]:
            raise ValueError(f"{path}: tensor {key!r} holds a {weight.shape} weight, expected {shapes[name]}")
        return weight

    weights, packs = {}, {}
    for name, shape in shapes.items():
        if name == "wte.weight" or any(name.endswith(f"{hf}.weight") for hf in _HF_LINEAR.values()):
            packs[name] = packed(name, rows_are_outputs=name != "wte.weight")
            weights[name] = np.broadcast_to(np.float32(0), shape)     # a stand-in with the right shape
        elif name in f:
            weights[name] = f.get(name)
    has_head = f"lm_head.weight.{storage}" in f
    if has_head:                                                   # an untied LM head
        weights["lm_head.weight"] = np.broadcast_to(np.float32(0), shapes["wte.weight"])
    model = model_class(config, weights, backend=backend)
    body = getattr(model, "transformer", model)
    for i, block in enumerate(body.h):
        for name, hf_name in _HF_LINEAR.items():
            setattr(block, name, (packs[f"h.{i}.{hf_name}.weight"], getattr(block, name)[1]))
    body.wte = packs["wte.weight"]
    if hasattr(model, "lm_head"):
        model.lm_head = packed("lm_head.weight", rows_are_outputs=False) if has_head else body.wte
    return model
