"""GPT2Model and GPT2LMHeadModel: the GPT-2 forward pass, composed from the ops.

One token's path, ids to logits (shapes for a batch b of t new tokens, s = past + t):

    x = wte[ids] + wpe[positions]                                  [b, t] -> [b, t, c]
    for each block in h:
        x = x + block.attn(block.ln_1(x))                          [b, t, c]
        x = x + block.mlp(block.ln_2(x))                           [b, t, c]
    x = ln_f(x)                                                    [b, t, c]
    logits = x @ wte.T                                             [b, t, v]   (GPT2LMHeadModel)

Every weight sits at the attribute path of its checkpoint name: ``h.0.attn.c_attn.weight`` is
``model.transformer.h[0].attn.c_attn.weight``, ``wte.weight`` is ``model.transformer.wte.weight``,
so nothing renames tensors on the way in or out (``state_dict()`` gives them back by name).

``backend="numba"`` (default) takes the ops in ``ops.BACKEND_OPS`` from ``minigpt2.engine``;
``backend="numpy"`` takes them from ``ops.py``. Both compute the same function.
"""

import os

import numpy as np

from minigpt2 import inputs, ops
from minigpt2.cache import KVCache
from minigpt2.config import GPT2Config
from minigpt2.generate import GenerationMixin
from minigpt2.generation_config import GenerationConfig
from minigpt2.outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from minigpt2.weights.checkpoints import check_body_weights, load_weights, split_body_and_heads, weights_source
from minigpt2.weights.packed import PackedWeight
from minigpt2.weights.tf_checkpoint import is_openai_release, load_openai_release


def backend_module(backend):
    """The module that provides the ops in ops.BACKEND_OPS for this backend."""
    if backend == "numpy":
        return ops
    if backend == "numba":
        from minigpt2 import engine      # imported on demand: only this backend pays for Numba
        return engine
    raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")


class Params:
    """The tensors of one layer, found under their checkpoint names: ``weight`` and ``bias``."""

    def __init__(self, weights, name):
        self.name = name
        self.weight = weights[f"{name}.weight"]
        self.bias = weights.get(f"{name}.bias")

    def named(self):
        """{checkpoint name: array} of this layer's tensors."""
        out = {f"{self.name}.weight": self.weight}
        if self.bias is not None:
            out[f"{self.name}.bias"] = self.bias
        return out


class GPT2Attention:
    """Causal self-attention: c_attn makes q, k, v for every head, c_proj mixes the heads' outputs."""

    def __init__(self, weights, name, layer_idx, config, backend_ops):
        self.c_attn = Params(weights, f"{name}.c_attn")     # [c, 3c], [3c]
        self.c_proj = Params(weights, f"{name}.c_proj")     # [c, c], [c]
        self.layer_idx, self.n_head, self.ops = layer_idx, config.n_head, backend_ops
        # Attention scores are q.k * scale. reorder_and_upcast_attn only changes the order of
        # float16 operations in transformers; in float32 it computes the same thing, so it is ignored.
        self.scale = 1.0 / np.sqrt(config.head_dim) if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_idx + 1

    def __call__(self, h, mask, kv_cache, head_mask, output_attentions, record, rows_to_keep):
        """h [b, t, c] (after ln_1) -> (out [b, t, c] or [b, rows_to_keep, c], probs or None)."""
        K = self.ops
        qkv = K.linear(h, self.c_attn.weight, self.c_attn.bias)        # [b, t, c] -> [b, t, 3c]
        c = qkv.shape[-1] // 3
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]   # 3 x [b, t, c] (views)
        q, k, v = (ops.split_heads(a, self.n_head) for a in (q, k, v))  # 3 x [b, h, t, d]
        record("attn.q", q), record("attn.k", k), record("attn.v", v)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)               # past + new: [b, h, s, d]
        if 0 < rows_to_keep < q.shape[2]:                              # only the last rows go on:
            q = q[:, :, -rows_to_keep:]                                # [b, h, rows, d]
            mask = np.ascontiguousarray(mask[:, -rows_to_keep:])       # [b, rows, s]
        a, probs = K.attention(q, k, v, mask, self.scale, head_mask, output_attentions)  # [b, h, t, d]
        if probs is not None:
            record("attn.probs", probs)
        return K.linear(ops.merge_heads(a), self.c_proj.weight, self.c_proj.bias), probs  # [b, t, c]


class GPT2MLP:
    """The position-wise feed-forward layer: c_fc widens to n_inner (4c), GELU, c_proj narrows back."""

    def __init__(self, weights, name, config, backend_ops):
        self.c_fc = Params(weights, f"{name}.c_fc")         # [c, inner], [inner]
        self.c_proj = Params(weights, f"{name}.c_proj")     # [inner, c], [c]
        self.activation, self.ops = config.activation_function, backend_ops

    def __call__(self, h, record):
        """h [b, t, c] (after ln_2) -> [b, t, c]."""
        K = self.ops
        if self.activation == "gelu_new":                  # GPT-2's own: the backend fuses it
            h_act = K.linear_gelu(h, self.c_fc.weight, self.c_fc.bias)            # [b, t, inner]
        else:                                              # the other activations: NumPy (ops.py)
            h_act = ops.ACTIVATIONS[self.activation](K.linear(h, self.c_fc.weight, self.c_fc.bias))
        record("mlp.act", h_act)
        return K.linear(h_act, self.c_proj.weight, self.c_proj.bias)              # [b, t, c]


class GPT2Block:
    """One transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Pre-norm residual."""

    def __init__(self, weights, layer_idx, config, backend_ops):
        name = f"h.{layer_idx}"
        self.ln_1 = Params(weights, f"{name}.ln_1")
        self.attn = GPT2Attention(weights, f"{name}.attn", layer_idx, config, backend_ops)
        self.ln_2 = Params(weights, f"{name}.ln_2")
        self.mlp = GPT2MLP(weights, f"{name}.mlp", config, backend_ops)
        self.layer_idx, self.eps, self.ops = layer_idx, config.layer_norm_epsilon, backend_ops

    def __call__(self, x, mask, kv_cache=None, head_mask=None, output_attentions=False, trace=None,
                 rows_to_keep=0):
        """x [b, t, c], mask [b, t, s] -> (x [b, t, c], probs [b, h, t, s] or None).

        ``trace``, when a dict, receives every intermediate as trace["h.{i}.<step>"], in order:
        ln_1, attn.q/k/v [b, h, t, d] (new tokens only), attn.probs (with output_attentions),
        attn (after c_proj), resid_1 (x + attn), ln_2, mlp.act [b, t, inner], mlp, out.
        ``rows_to_keep`` > 0: return x for only the last rows_to_keep positions ([b, rows, c]).
        Keys and values are still computed (and cached) for all t; the attention output, c_proj
        and the MLP run on the kept rows only (the last block of a prompt whose logits are only
        needed at its end).
        """
        record = (lambda name, a: trace.__setitem__(f"h.{self.layer_idx}.{name}", a)) if trace is not None \
            else (lambda name, a: None)
        h = self.ops.layer_norm(x, self.ln_1.weight, self.ln_1.bias, self.eps)   # [b, t, c]
        record("ln_1", h)
        a, probs = self.attn(h, mask, kv_cache, head_mask, output_attentions, record, rows_to_keep)
        x = x[:, x.shape[1] - a.shape[1]:] + a                                   # [b, t or rows, c]
        record("attn", a), record("resid_1", x)
        h = self.ops.layer_norm(x, self.ln_2.weight, self.ln_2.bias, self.eps)   # [b, t, c]
        record("ln_2", h)
        m = self.mlp(h, record)
        x = x + m
        record("mlp", m), record("out", x)
        return x, probs

    def named_weights(self):
        """{checkpoint name: array} of this block's tensors."""
        return {**self.ln_1.named(), **self.attn.c_attn.named(), **self.attn.c_proj.named(),
                **self.ln_2.named(), **self.mlp.c_fc.named(), **self.mlp.c_proj.named()}


class PretrainedMixin:
    """``from_pretrained`` for every model class (this module's and heads.py's): a folder or a name
    -> config + checked weights -> ``cls(config, weights, backend=..., source=...)``."""

    @classmethod
    def from_pretrained(cls, name_or_folder, backend="numba", cache_dir=None, local_files_only=False,
                        dtype="auto"):
        """Load from a folder (config.json + model.safetensors) or a model name (via minigpt2.weights.hub).

        dtype: how the big matrices (the block linears and wte / the LM head) are stored; compute
        stays float32. "float32", "bfloat16", "float16" or "int8" (also bf16 / fp16 / fp32 and
        NumPy dtypes, see quantize.resolve_dtype), converted once here. "auto" (default, as in
        transformers 5): as stored, so an ordinary checkpoint loads as float32 and a folder
        written by quantize.save_converted loads packed, as it was saved, with nothing converted.
        Asking such a folder for another dtype is a ValueError (no re-quantizing packed values).
        Task heads (heads.py) keep their few-row head in float32.
        """
        from minigpt2 import quantize     # the packed formats: only needed when they are used

        storage = quantize.resolve_dtype(dtype)                       # bad dtype: fail before any I/O
        folder = resolve_folder(name_or_folder, cache_dir, local_files_only)
        stored = quantize.stored_dtype(folder)
        if stored is not None:                                        # a save_converted folder
            if storage is not None and storage != stored:
                raise ValueError(f"{folder} holds {stored} weights (written by quantize.save_converted); "
                                 f"it loads as dtype={stored!r} (or 'auto'), not {storage!r}. For "
                                 f"{storage}, load the original float32 checkpoint with dtype={storage!r}")
            if not issubclass(cls, (GPT2Model, GPT2LMHeadModel)):
                raise ValueError(f"{os.path.join(folder, 'model.safetensors')} holds {stored} weights written by "
                                 f"minigpt2.quantize.save_converted for a GPT2LMHeadModel; {cls.__name__} "
                                 f"cannot load it (load the original checkpoint, with dtype={stored!r})")
            config, weights, source = quantize.load_converted_weights(folder)    # packed as saved
        elif is_openai_release(folder):                # OpenAI's TF1 release: hparams.json + model.ckpt.*
            (config, weights), source = load_openai_release(folder), folder
        else:
            config = GPT2Config.from_pretrained(folder)
            body, heads = load_weights(folder, config)              # body unprefixed, heads as stored
            weights, source = {**heads, **body}, weights_source(folder)
        model = quantize.convert_model(cls(config, weights, backend=backend, source=source),
                                       storage)                     # None / float32 / as stored: unchanged
        model.generation_config = GenerationConfig.for_folder(folder, config)   # generate's defaults
        return model


class GPT2Model(PretrainedMixin):
    """The GPT-2 body: embeddings, n_layer blocks, final layer norm. ``weights`` as in a checkpoint
    (names with or without the ``transformer.`` prefix), float32 arrays."""

    def __init__(self, config, weights, backend="numba", source="weights"):
        if config.add_cross_attention:
            raise ValueError("add_cross_attention=True (GPT-2 as a decoder of an encoder) is not supported")
        if config.activation_function not in ops.ACTIVATIONS:
            raise ValueError(f"activation_function {config.activation_function!r} is not one of "
                             f"{sorted(ops.ACTIVATIONS)}")
        body, _ = split_body_and_heads(weights)
        check_body_weights(body, config, source)
        body = {name: as_weight(a) for name, a in body.items()}    # float32: no copy; packed: as is
        self.config, self.backend, self.ops = config, backend, backend_module(backend)
        self.wte = Params(body, "wte")                                      # [v, c]
        self.wpe = Params(body, "wpe")                                      # [n_positions, c]
        self.h = [GPT2Block(body, i, config, self.ops) for i in range(config.n_layer)]
        self.ln_f = Params(body, "ln_f")
        # A batch-1 decode step on the numba backend runs every block in one compiled call
        # (engine/decode_step.py) when the weights allow it; False takes the route through the
        # blocks below, which computes the same numbers one op at a time.
        self.fused_decode = backend == "numba"
        self._decode_step, self._decode_step_weights = None, None

    def state_dict(self):
        """{checkpoint name: array} of every weight, unprefixed ("wte.weight", "h.0.ln_1.weight", ...)."""
        weights = {**self.wte.named(), **self.wpe.named()}
        for block in self.h:
            weights.update(block.named_weights())
        weights.update(self.ln_f.named())
        return weights

    def __call__(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                 position_ids=None, head_mask=None, inputs_embeds=None, use_cache=False,
                 output_attentions=False, output_hidden_states=False, trace=None, rows_to_keep=0):
        """Run the body over t new tokens. Arguments as transformers' GPT2Model, NumPy instead of torch.

        input_ids [b, t] (lists work; a 1-D sequence is one row) or inputs_embeds [b, t, c].
        attention_mask [b, past + t]: 1 = token, 0 = padding. position_ids default to
        cumsum(mask) - 1 when a mask is given (so left padding works), else past + arange(t).
        past_key_values: a KVCache (or HF tuples), read and *written in place*, as transformers'
        cache is, even with use_cache=False; use_cache=True returns it (a new one if None).
        head_mask [n_head] or [n_layer, n_head] scales each head's probabilities.
        trace: a dict to receive every intermediate, in order: "embed" (wte + wpe), per block
        "h.{i}.ln_1", "h.{i}.attn", "h.{i}.resid_1", "h.{i}.ln_2", "h.{i}.mlp", "h.{i}.out" (and
        "h.{i}.attn.q/k/v", "h.{i}.attn.probs", "h.{i}.mlp.act"), then "ln_f" (and "logits" from
        GPT2LMHeadModel). minigpt2.verify compares these names with transformers.
        rows_to_keep (not in transformers): > 0 returns last_hidden_state for only the last
        rows_to_keep positions [b, rows, c], and the last block computes nothing else (the KV cache
        is still filled for every position). Ignored when hidden states, attentions or a trace are
        asked for. GPT2LMHeadModel passes its logits_to_keep here.
        """
        cfg = self.config
        # -- check the inputs and find b (batch), t (new tokens), n_past (tokens in the cache)
        if not isinstance(rows_to_keep, (int, np.integer)) or rows_to_keep < 0:
            raise ValueError(f"rows_to_keep must be an int >= 0, got {rows_to_keep!r}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            input_ids = inputs.token_ids(input_ids, "input_ids", cfg.vocab_size)     # [b, t]
            b, t = input_ids.shape
        else:
            inputs_embeds = inputs.embeddings(inputs_embeds, cfg.n_embd)             # [b, t, c]
            b, t = inputs_embeds.shape[:2]
        kv_cache = _prepare_cache(past_key_values, use_cache, cfg, b)
        n_past = len(kv_cache) if kv_cache is not None else 0
        if n_past + t > cfg.n_positions:
            raise ValueError(f"sequence too long: {n_past} cached + {t} new tokens > n_positions "
                             f"({cfg.n_positions}), the number of position embeddings")
        attention_mask = inputs.attention_mask_2d(attention_mask, b, n_past + t)        # [b, s] or None
        position_ids = inputs.position_ids_for(position_ids, attention_mask, b, t, n_past, cfg.n_positions)
        head_masks = inputs.head_masks(head_mask, cfg.n_layer, cfg.n_head)           # n_layer x ([h] or None)

        # -- embeddings: token + position (+ token type, embedded with wte as in transformers)
        wte, wpe = self.wte.weight, self.wpe.weight                           # [v, c], [n_positions, c]
        tokens = wte[input_ids] if inputs_embeds is None else inputs_embeds
        x = tokens + wpe[position_ids]                                         # [b, t, c]
        if token_type_ids is not None:
            x = x + wte[inputs.token_ids(token_type_ids, "token_type_ids", cfg.vocab_size, (b, t))]
        if trace is not None:
            trace["embed"] = x
        if self._fused_step_applies(b, t, kv_cache, attention_mask, head_masks,
                                    output_attentions or output_hidden_states or trace is not None):
            kv_cache.check_room(t)
            x = self._decode_step(x[0, 0], kv_cache.keys, kv_cache.values, n_past)[None, None]   # [1, 1, c]
            kv_cache.advance(t)
            return BaseModelOutputWithPast(last_hidden_state=x, past_key_values=kv_cache if use_cache else None)
        # which keys each query may see: causal, and not padding
        mask = np.ascontiguousarray(np.broadcast_to(
            ops.causal_mask(t, n_past, attention_mask), (b, t, n_past + t)))   # [b, t, s] bool

        # -- the blocks. With rows_to_keep, the last block computes its output for the kept rows
        # only: nothing else reads the other rows (their keys and values are still cached).
        if output_hidden_states or output_attentions or trace is not None:
            rows_to_keep = 0
        hidden_states, attentions = [], []
        for i, (block, block_head_mask) in enumerate(zip(self.h, head_masks)):
            hidden_states.append(x)                                            # input of each block
            keep = rows_to_keep if i == cfg.n_layer - 1 else 0
            x, probs = block(x, mask, kv_cache, block_head_mask, output_attentions, trace, keep)
            attentions.append(probs)
        x = self.ops.layer_norm(x, self.ln_f.weight, self.ln_f.bias, cfg.layer_norm_epsilon)  # [b, t, c]
        hidden_states.append(x)                                                # the last one is after ln_f
        if trace is not None:
            trace["ln_f"] = x
        if kv_cache is not None:
            kv_cache.advance(t)                                                # every layer has written t more
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=kv_cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)

    def _fused_step_applies(self, b, t, kv_cache, attention_mask, head_masks, inspecting):
        """Whether this call is a decode step that engine.DecodeStep can run: one sequence, one
        new token after a cache, every key visible, nothing inspected, weights it supports and
        a context it takes (DecodeStep.applies).
        (Re)builds the DecodeStep when the weights held are not the ones it was built from."""
        if not (self.fused_decode and b == 1 and t == 1 and kv_cache is not None and not inspecting
                and all(m is None for m in head_masks) and self.config.activation_function == "gelu_new"
                and (attention_mask is None or attention_mask.all())):
            return False
        weights = self.state_dict()
        held = list(weights.values())
        if self._decode_step_weights is None or any(now is not built
                                                     for now, built in zip(held, self._decode_step_weights)):
            self._decode_step_weights = held
            self._decode_step = None
            if self.ops.DecodeStep.supports(weights, self.config.n_layer):
                scales = [block.attn.scale for block in self.h]
                self._decode_step = self.ops.DecodeStep(weights, self.config.n_layer,
                                                        self.config.layer_norm_epsilon, scales)
        return self._decode_step is not None and self._decode_step.applies(kv_cache.keys, len(kv_cache))


class GPT2LMHeadModel(GenerationMixin, PretrainedMixin):
    """GPT2Model plus the language-modelling head: logits = hidden @ lm_head.weight.T, where
    lm_head.weight is wte.weight itself (tied) unless the config unties them."""

    def __init__(self, config, weights, backend="numba", source="weights"):
        self.transformer = GPT2Model(config, weights, backend=backend, source=source)
        self.config = config
        self.lm_head = lm_head_params(config, weights, self.transformer, source)   # weight [v, c]

    def state_dict(self):
        """{checkpoint name: array}: the body's names, plus "lm_head.weight" when it is not tied."""
        return {**self.transformer.state_dict(), **untied_lm_head(self)}

    @property
    def backend(self):
        return self.transformer.backend

    def __call__(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                 position_ids=None, head_mask=None, inputs_embeds=None, labels=None, use_cache=False,
                 output_attentions=False, output_hidden_states=False, trace=None, logits_to_keep=0):
        """As GPT2Model, plus `labels` (the loss) and `logits_to_keep` (as transformers 5: compute
        the logits of only the last `logits_to_keep` positions, 0 = all; a prompt that only
        needs its next token skips most of the [t, c] @ [c, v] LM head)."""
        if not isinstance(logits_to_keep, (int, np.integer)) or logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be an int >= 0, got {logits_to_keep!r}")
        if logits_to_keep and labels is not None:
            raise ValueError("logits_to_keep needs every position's logits to compute the loss "
                             "from labels: pass one or the other")
        out = self.transformer(input_ids=input_ids, past_key_values=past_key_values,
                               attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, head_mask=head_mask,
                               inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, trace=trace,
                               rows_to_keep=logits_to_keep)
        h = out.last_hidden_state                                      # [b, t, c] (or [b, keep, c])
        if logits_to_keep:
            h = h[:, -logits_to_keep:]                                          # [b, keep, c]
        logits = self.transformer.ops.linear(h, self.lm_head.weight.T, None)  # [b, t, c] @ [c, v] -> [b, t, v]
        if trace is not None:
            trace["logits"] = logits
        loss = None
        if labels is not None:
            b, t = h.shape[:2]
            labels = inputs.token_ids(labels, "labels", self.config.vocab_size, (b, t), allow=-100)
            # position i predicts token i + 1: drop the last logits and the first label
            loss = ops.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                     labels[:, 1:].reshape(-1))
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states, attentions=out.attentions)

# ---- helpers -----------------------------------------------------------------------------------

def as_weight(array):
    """A weight as the model keeps it: float32 (no copy when it already is), or packed as it is.
    A read-only vector (a bias or layer norm parameter of a memory-mapped file) is copied: it is
    small, and the kernels then see one array type however the model was loaded (Numba compiles
    a kernel once per argument type)."""
    if isinstance(array, PackedWeight):
        return array
    array = np.asarray(array, np.float32)
    return array.copy() if array.ndim == 1 and not array.flags.writeable else array


def lm_head_params(config, weights, body, source="weights"):
    """The LM head's Params: weight = body.wte.weight (tied, the same array) or lm_head.weight."""
    head = Params({"lm_head.weight": body.wte.weight}, "lm_head")
    if config.tie_word_embeddings:
        return head
    _, heads = split_body_and_heads(weights)
    if "lm_head.weight" not in heads:
        raise ValueError(f"{source}: tie_word_embeddings is False but the weights have no 'lm_head.weight'")
    head.weight = as_weight(heads["lm_head.weight"])
    if head.weight.shape != body.wte.weight.shape:
        raise ValueError(f"{source}: tensor 'lm_head.weight' has shape {list(head.weight.shape)}, "
                         f"expected {list(body.wte.weight.shape)}")
    return head


def untied_lm_head(model):
    """{"lm_head.weight": array} when the model's LM head is not wte itself, else {}."""
    if model.lm_head.weight is model.transformer.wte.weight:
        return {}
    return {"lm_head.weight": model.lm_head.weight}


def resolve_folder(name_or_folder, cache_dir=None, local_files_only=False):
    """The model folder for a folder path or a model name (bundled, cached, or downloaded)."""
    if not isinstance(name_or_folder, (str, os.PathLike)):
        raise ValueError(f"from_pretrained needs a model name or a folder path, got "
                         f"{type(name_or_folder).__name__} {name_or_folder!r}")
    if os.path.isdir(os.fspath(name_or_folder)):
        return os.fspath(name_or_folder)
    from minigpt2.weights.hub import resolve_model_folder   # only names need the hub (and maybe the network)
    return resolve_model_folder(name_or_folder, cache_dir=cache_dir, local_files_only=local_files_only)


def _prepare_cache(past_key_values, use_cache, config, b):
    """The KVCache to read and write this call, or None (no cache at all)."""
    if past_key_values is None:
        return KVCache.for_config(config, b) if use_cache else None
    if not isinstance(past_key_values, KVCache):                # transformers' tuple of (key, value)
        if not isinstance(past_key_values, (tuple, list)) or len(past_key_values) != config.n_layer:
            raise ValueError(f"past_key_values must be a KVCache or {config.n_layer} (key, value) pairs, "
                             f"got {type(past_key_values).__name__}")
        past_key_values = KVCache.from_legacy(past_key_values, config.n_positions)
    cache = past_key_values
    k = cache.keys[0]
    expected = (b, config.n_head, config.head_dim)
    if cache.n_layer != config.n_layer or (k.shape[0], k.shape[1], k.shape[3]) != expected:
        raise ValueError(f"past_key_values do not fit this model and batch: {cache!r}, expected "
                         f"n_layer={config.n_layer}, batch={b}, n_head={config.n_head}, "
                         f"head_dim={config.head_dim}")
    return cache
