"""Weights stored in fewer bytes, computed with in float32: bfloat16, float16, int8.

Decoding one token reads every weight once, so its speed is set by the bytes per weight:
float32 4, bfloat16 / float16 2, int8 1 (plus one float32 scale per output channel). The
activations, the sums and everything else stay float32; only the storage of the big matrices
(the four per block and the tied embedding / LM head) changes, converted once at load:

    model = GPT2LMHeadModel.from_pretrained(folder)
    convert_model(model, "bfloat16")          # or "float16", "int8"; in place, returns model
    save_converted(model, "gpt2-bf16")        # optional: later loads skip the conversion
    model = GPT2LMHeadModel.from_pretrained("gpt2-bf16")   # packed arrays memory-mapped, nothing converted

or, the way transformers spells it, in one call (see `resolve_dtype` for what `dtype` accepts):

    model = GPT2LMHeadModel.from_pretrained(folder, dtype="bfloat16")   # converts once at load

The storage formats themselves (bfloat16, float16, per-channel int8) are `PackedWeight`, in
``minigpt2/weights/packed.py``. This module finds the matrices by their checkpoint names
(``block.attn.c_attn.weight``, ``wte.weight``, ...) and never imports the model.
"""

import os

import numpy as np

from minigpt2.config import GPT2Config
from minigpt2.weights.checkpoints import check_config_fits_weights, expected_body_shapes
from minigpt2.weights.packed import DTYPES, PackedWeight
from minigpt2.weights.safetensors import SafetensorsFile, load_metadata, save_file

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
    held = body.wte.weight.storage if isinstance(body.wte.weight, PackedWeight) else "float32"
    if dtype is None or dtype == held:
        return model
    if held != "float32":
        raise ValueError(f"the model already holds {held} weights; convert_model to {dtype} needs the "
                         f"float32 weights (load the original checkpoint again)")
    for block in body.h:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
            layer.weight = PackedWeight.pack(layer.weight, dtype)              # one output per row
    lm_head = getattr(model, "lm_head", None)
    tied = lm_head is not None and lm_head.weight is body.wte.weight
    body.wte.weight = PackedWeight.pack(body.wte.weight, dtype, rows_are_outputs=False)   # [v, c] rows
    if tied:
        lm_head.weight = body.wte.weight
    elif lm_head is not None:
        lm_head.weight = PackedWeight.pack(lm_head.weight, dtype, rows_are_outputs=False)
    return model


def weight_bytes(model):
    """Bytes of weights the model holds (packed sizes for packed matrices; a tied array once)."""
    unique = {id(array): array for array in model.state_dict().values()}
    lm_head = getattr(model, "lm_head", None)
    if lm_head is not None:
        unique[id(lm_head.weight)] = lm_head.weight
    return sum(array.nbytes for array in unique.values())


# ---- saving and loading a converted model -----------------------------------------------------
# The file is a safetensors file that minigpt2 reads back without converting anything: packed
# matrices are stored as they sit in memory (one output channel per row for the block weights,
# wte as [v, c]), under "<name>.<dtype>" plus "<name>.scale" for int8; the small tensors keep
# their checkpoint names in float32. The metadata says {"minigpt2.dtype": dtype}. transformers
# cannot read it (the layout is ours); keep the original checkpoint for that.


def save_converted(model, folder):
    """Write a converted GPT2LMHeadModel to folder/config.json + folder/model.safetensors."""
    weights = model.state_dict()                     # checkpoint names; lm_head.weight only if untied
    if not isinstance(weights["wte.weight"], PackedWeight):
        raise ValueError("save_converted: the model is not converted (call convert_model first)")
    storage = weights["wte.weight"].storage
    tensors = {}
    for name, array in weights.items():
        if isinstance(array, PackedWeight):
            # uint16 is stored as U16 (bfloat16 or float16 bits: the metadata says which)
            tensors[f"{name}.{storage}"] = array.data.view(np.uint16) if storage != "int8" else array.data
            if array.scale is not None:
                tensors[f"{name}.scale"] = array.scale
        else:
            tensors[name] = np.asarray(array)
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    save_file(tensors, os.path.join(folder, "model.safetensors"),
              metadata={"format": "minigpt2", "minigpt2.dtype": storage})


def stored_dtype(folder):
    """The packed type of a folder written by save_converted ("bfloat16", "float16", "int8"), or
    None for anything else (an ordinary checkpoint, shards, no weights: the loader then says what
    is wrong). Reads only the header of folder/model.safetensors, the one file save_converted writes."""
    path = os.path.join(os.fspath(folder), "model.safetensors")
    if not os.path.isfile(path):
        return None
    storage = load_metadata(path).get("minigpt2.dtype")
    if storage is not None and storage not in DTYPES[1:]:
        raise ValueError(f"{path}: unknown 'minigpt2.dtype' {storage!r} in its metadata "
                         f"(expected one of {DTYPES[1:]})")
    return storage


def load_converted_weights(folder):
    """Read a folder written by save_converted: (config, {checkpoint name: array or PackedWeight},
    source). The packed arrays stay memory-mapped (no copy); a model class takes the dict as it is.

    Every tensor is checked before any kernel can see it, as a checkpoint's are: the config must
    fit the weights (checked first, so a config cannot make the loader build what the file does
    not hold), each packed matrix has the data dtype of its storage and its shape, an int8 one a
    float32 scale per row, each small tensor float32 and its shape, and no tensor is left over.
    """
    path = os.path.join(os.fspath(folder), "model.safetensors")
    f = SafetensorsFile(path)
    storage = f.metadata.get("minigpt2.dtype")
    if storage not in DTYPES[1:]:
        raise ValueError(f"{path} was not written by save_converted (no 'minigpt2.dtype' in its metadata)")
    config = GPT2Config.from_pretrained(folder)
    suffix = f".{storage}"
    # the logical shape of each stored matrix, read from the header only
    header_shapes = {}
    for key in f.keys():
        name = key[:-len(suffix)] if key.endswith(suffix) else key
        shape = f.shape(key)
        if key.endswith(suffix) and len(shape) == 2 and name != "wte.weight" and name != "lm_head.weight":
            shape = shape[::-1]                               # stored one output channel per row
        header_shapes.setdefault(name, shape)
    check_config_fits_weights(header_shapes, config, path)
    shapes = expected_body_shapes(config)
    packed_names = [name for name in shapes
                    if name == "wte.weight" or name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))]
    if not config.tie_word_embeddings:
        packed_names.append("lm_head.weight")
    shapes_with_head = {**shapes, "lm_head.weight": shapes["wte.weight"]}
    used = set()

    stored_as = "I8" if storage == "int8" else "U16"         # bfloat16 / float16 bits are stored as U16

    def packed(name, rows_are_outputs):
        key = f"{name}{suffix}"
        if key not in f:
            raise ValueError(f"{path}: missing tensor {key!r}")
        if f.dtype(key) != stored_as or len(f.shape(key)) != 2:
            raise ValueError(f"{path}: tensor {key!r} is {f.dtype(key)} of shape {list(f.shape(key))}; "
                             f"a {storage} folder stores a 2-D {stored_as} array")
        data = f.get(key)
        data = data.view(np.float16) if storage == "float16" else data
        used.add(key)
        scale = None
        if storage == "int8":
            scale_key = f"{name}.scale"
            if scale_key not in f:
                raise ValueError(f"{path}: missing tensor {scale_key!r} (the scales of int8 tensor {key!r})")
            if f.dtype(scale_key) != "F32" or f.shape(scale_key) != data.shape[:1]:
                raise ValueError(f"{path}: tensor {scale_key!r} is {f.dtype(scale_key)} of shape "
                                 f"{list(f.shape(scale_key))}; expected F32 of shape [{data.shape[0]}], "
                                 f"one scale per row of {key!r}")
            scale = f.get(scale_key)
            used.add(scale_key)
        weight = PackedWeight(data, scale, storage, rows_are_outputs)
        if weight.shape != shapes_with_head[name]:
            raise ValueError(f"{path}: tensor {key!r} holds a {weight.shape} weight, expected "
                             f"{shapes_with_head[name]}")
        weight.check(key, path)                             # the same rule GPT2Model applies
        return weight

    weights = {}
    for name in packed_names:
        weights[name] = packed(name, rows_are_outputs=name not in ("wte.weight", "lm_head.weight"))
    for name, shape in shapes.items():
        if name in weights:
            continue
        if name not in f:
            raise ValueError(f"{path}: missing tensor {name!r} (expected shape {list(shape)})")
        if f.dtype(name) != "F32" or f.shape(name) != shape:
            raise ValueError(f"{path}: tensor {name!r} is {f.dtype(name)} of shape {list(f.shape(name))}; "
                             f"expected F32 of shape {list(shape)}")
        weights[name] = f.get(name)
        used.add(name)
    unused = [key for key in f.keys() if key not in used]
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise ValueError(f"{path}: tensor {unused[0]!r}{more} is not used by the model config.json describes "
                         f"(n_layer={config.n_layer}, tie_word_embeddings={config.tie_word_embeddings}); "
                         f"was the folder changed after save_converted?")
    return config, weights, path
