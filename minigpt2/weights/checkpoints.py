"""Checkpoint tensors -> the weights GPT2Model expects, checked by name and shape.

A Hugging Face GPT-2 folder holds ``config.json`` and ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``). Its tensor names are the model's own, in the Conv1D layout
``[n_in, n_out]`` that ``ops.linear`` uses directly, so no renaming or transposing happens here:

    wte.weight [v, c]   wpe.weight [n_positions, c]   ln_f.weight, ln_f.bias [c]
    h.{i}.ln_1.weight / .bias [c]     h.{i}.attn.c_attn.weight [c, 3c]  .bias [3c]
    h.{i}.ln_2.weight / .bias [c]     h.{i}.attn.c_proj.weight [c, c]   .bias [c]
                                      h.{i}.mlp.c_fc.weight [c, inner]  .bias [inner]
                                      h.{i}.mlp.c_proj.weight [inner, c] .bias [c]

Saved from a ``GPT2LMHeadModel`` the same names carry a ``transformer.`` prefix; both are
accepted. The old ``h.{i}.attn.bias`` / ``attn.masked_bias`` buffers (a causal mask stored as a
"weight") are ignored by name. Tensors are looked up by name, never counted. Pickle files
(``pytorch_model.bin``) are never opened: unpickling runs arbitrary code.
"""

import json
import os
import re

import numpy as np

from minigpt2.weights.packed import PackedWeight
from minigpt2.weights.safetensors import SafetensorsFile

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
BODY_PREFIX = "transformer."
_BUFFER = re.compile(r"^h\.\d+\.(attn|crossattention)\.(bias|masked_bias)$")


def expected_body_shapes(config):
    """{name: shape} of every tensor GPT2Model needs, unprefixed."""
    c, inner = config.n_embd, config.inner_dim
    shapes = {"wte.weight": (config.vocab_size, c), "wpe.weight": (config.n_positions, c)}
    for i in range(config.n_layer):
        shapes.update({
            f"h.{i}.ln_1.weight": (c,), f"h.{i}.ln_1.bias": (c,),
            f"h.{i}.attn.c_attn.weight": (c, 3 * c), f"h.{i}.attn.c_attn.bias": (3 * c,),
            f"h.{i}.attn.c_proj.weight": (c, c), f"h.{i}.attn.c_proj.bias": (c,),
            f"h.{i}.ln_2.weight": (c,), f"h.{i}.ln_2.bias": (c,),
            f"h.{i}.mlp.c_fc.weight": (c, inner), f"h.{i}.mlp.c_fc.bias": (inner,),
            f"h.{i}.mlp.c_proj.weight": (inner, c), f"h.{i}.mlp.c_proj.bias": (c,),
        })
    shapes.update({"ln_f.weight": (c,), "ln_f.bias": (c,)})
    return shapes


def check_config_fits_weights(shapes, config, source="weights"):
    """Raise ValueError when the config describes a bigger model than the tensors hold.

    shapes: {unprefixed body name: shape}. Run before anything sized by the config is built, so
    a config.json with n_layer=10_000_000 beside a small file fails at once, naming the
    mismatch, instead of first listing 120 million tensor names. The width and context checks
    are the shapes of wte and wpe; the number of blocks is the highest h.N in the weights.
    """
    layers = {int(name.split(".")[1]) for name in shapes
              if name.startswith("h.") and name.split(".")[1].isdigit()}
    n_stored = max(layers) + 1 if layers else 0
    if config.n_layer > n_stored:
        raise ValueError(f"{source}: the config says n_layer={config.n_layer} but the weights hold "
                         f"{n_stored} layers (h.0 to h.{n_stored - 1}); does config.json belong to these weights?")
    for name, shape in (("wte.weight", (config.vocab_size, config.n_embd)),
                        ("wpe.weight", (config.n_positions, config.n_embd))):
        if name in shapes and tuple(shapes[name]) != shape:
            raise ValueError(f"{source}: tensor {name!r} has shape {list(shapes[name])}, expected "
                             f"{list(shape)} from the config (vocab_size, n_positions, n_embd)")


def check_body_weights(weights, config, source="weights"):
    """Raise ValueError naming the first tensor that is missing, has the wrong shape, or a dtype
    the kernels cannot read (float arrays; PackedWeight data and scales as PackedWeight.check says)."""
    check_config_fits_weights({name: np.shape(array) for name, array in weights.items()}, config, source)
    for name, shape in expected_body_shapes(config).items():
        if name not in weights:
            raise ValueError(f"{source}: missing tensor {name!r} (expected shape {list(shape)})")
        array = weights[name]
        actual = tuple(np.shape(array))
        if actual != shape:
            raise ValueError(f"{source}: tensor {name!r} has shape {list(actual)}, expected "
                             f"{list(shape)} from the config")
        if isinstance(array, PackedWeight):
            array.check(name, source)
        elif np.asarray(array).dtype.kind != "f":
            # integer or bool weights would be used as numbers without complaint: garbage logits
            raise ValueError(f"{source}: tensor {name!r} has dtype {np.asarray(array).dtype}; GPT-2 weights "
                             "must be floating point")


def weight_files(folder):
    """The safetensors file(s) of a model folder: one file, or the shards of an index."""
    folder = os.fspath(folder)
    single = os.path.join(folder, WEIGHTS_NAME)
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            try:
                weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError, RecursionError) as e:   # UnicodeDecodeError too
                raise ValueError(f"{index}: not a safetensors index ({e})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index}: weight_map must map tensor names to shard file names")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            # a shard is a file next to the index: never a path that leads out of the folder
            if os.path.basename(shard) != shard or shard in ("", ".", ".."):
                raise ValueError(f"{index}: shard {shard!r} is not a file name in the model folder")
            if not os.path.isfile(os.path.join(folder, shard)):
                raise ValueError(f"{index}: lists shard {shard!r}, which is not in {folder} "
                                 "(incomplete download?)")
        return [os.path.join(folder, shard) for shard in shards]
    pickles = [n for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
               if os.path.isfile(os.path.join(folder, n))]
    hint = (f" It has {pickles[0]}, which minigpt2 does not read (pickle can run code); convert it "
            f"once with transformers: model.save_pretrained(folder, safe_serialization=True).") if pickles else ""
    raise ValueError(f"{folder}: no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}.{hint}")


def read_folder_tensors(folder):
    """{name: float32 array} of every tensor in the folder's safetensors file(s), names as stored.

    F32 tensors stay zero-copy memory maps; F16/BF16/F64 ones are converted once to float32.
    Returns (tensors, {name: file it came from}).
    """
    tensors, origin = {}, {}
    for path in weight_files(folder):
        f = SafetensorsFile(path)
        if "minigpt2.dtype" in f.metadata:     # packed weights: names and dtypes of their own
            raise ValueError(f"{path} holds {f.metadata['minigpt2.dtype']} weights written by "
                             "minigpt2.quantize.save_converted; load it with GPT2LMHeadModel.from_pretrained(folder) "
                             "(or GPT2Model), which keeps it packed")
        for name in f.keys():
            if name in tensors:
                raise ValueError(f"{path}: tensor {name!r} also appears in {origin[name]}")
            tensors[name] = f.get(name, as_float32=True)
            origin[name] = path
    return tensors, origin


def split_body_and_heads(tensors, origin=None, source="checkpoint"):
    """Separate the body (GPT2Model) tensors from everything else.

    Returns (body: unprefixed names, e.g. "h.0.ln_1.weight"; heads: every other tensor, e.g.
    "lm_head.weight", "score.weight"). Buffers such as "h.0.attn.bias" are dropped.
    """
    origin = origin or {}
    body, heads = {}, {}
    for name, array in tensors.items():
        if name.startswith(BODY_PREFIX):
            short = name[len(BODY_PREFIX):]
        elif name.split(".")[0] in ("wte", "wpe", "h", "ln_f"):
            short = name
        else:
            heads[name] = array
            continue
        if _BUFFER.match(short):
            continue
        if short in body:
            raise ValueError(f"{origin.get(name, source)}: tensor {short!r} is stored both with and "
                             f"without the {BODY_PREFIX!r} prefix")
        body[short] = array
    return body, heads


def weights_source(folder):
    """How error messages name a folder's weights: its one file, or the folder and its shard count."""
    files = weight_files(folder)
    return files[0] if len(files) == 1 else f"{folder} ({len(files)} shards)"


def load_weights(folder, config):
    """Body and head tensors of a model folder, the body checked against ``config``.

    Returns (body, heads) as in ``split_body_and_heads``. A missing or mis-shaped body tensor is
    a ValueError naming the tensor, both shapes and the file.
    """
    tensors, origin = read_folder_tensors(folder)
    body, heads = split_body_and_heads(tensors, origin)
    files = sorted(set(origin.values())) or [os.path.join(os.fspath(folder), WEIGHTS_NAME)]
    source = files[0] if len(files) == 1 else f"{folder} ({len(files)} shards)"
    check_config_fits_weights({name: array.shape for name, array in body.items()}, config, source)
    for name, shape in expected_body_shapes(config).items():
        where = origin.get(name, origin.get(BODY_PREFIX + name, source))
        if name in body and tuple(body[name].shape) != shape:
            raise ValueError(f"{where}: tensor {name!r} has shape {list(body[name].shape)}, "
                             f"expected {list(shape)} from config.json")
        # integer or bool weights would be used as numbers without complaint: garbage logits
        if name in body and body[name].dtype.kind != "f":
            raise ValueError(f"{where}: tensor {name!r} has dtype {body[name].dtype}; GPT-2 weights "
                             "must be floating point (F32, F16, BF16 or F64)")
    check_body_weights(body, config, source)
    # A body tensor the config has no place for (say h.11.* with n_layer=6 in config.json) would
    # be dropped without a word: the model would run, on part of the weights.
    expected = expected_body_shapes(config)
    unused = [name for name in body if name not in expected]
    if unused:
        where = origin.get(unused[0], origin.get(BODY_PREFIX + unused[0], source))
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise ValueError(f"{where}: tensor {unused[0]!r}{more} is not used by the model config.json "
                         f"describes (n_layer={config.n_layer}); does config.json belong to these weights?")
    return body, heads
