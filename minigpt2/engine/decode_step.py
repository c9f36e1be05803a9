"""A batch-1 decode step through every block of the body as one compiled call: no Python per layer.

Through the ops, one decode step of GPT-2 124M is about a hundred engine calls (per block two
layer norms, an attention and four linear maps), each with its Python checks, allocations and
a Numba dispatch around a kernel that may run for only 20 microseconds. `DecodeStep` gathers a
model's weights once, and `decode_body` runs the blocks and the final layer norm for one new
token in one call, with the same kernels the ops use (layer_norm_op.layer_norm_row,
matvec.matvec_out_in_one_row or, with int8 activations, int8_dot.matvec_int8_blocks;
attention_op.attention_heads), so it gives the same numbers as the route through the ops
(tests/test_decode_step.py).

It covers what batch-1 generation needs: packed weights (bfloat16 / float16 / int8, whose
one-row kernel is the engine's own; float32 decode calls BLAS, which Numba cannot call), one
sequence, one new token, GELU "gelu_new", no head mask, and a context short enough for the
serial attention kernel (`DecodeStep.applies`; policy.SERIAL_MAX_ELEMENTS: 341 tokens for GPT-2,
where the attention is still a small part of a step). The model takes the route through the ops
for everything else (GPT2Model.fused_decode), whose threaded attention serves long contexts.

Few kernels, because each compiled specialisation costs seconds on a first run: the one-row
matrix-vector kernel (threaded; it has no serial build) and the attention's serial build only,
the one a prompt has compiled already.
"""

import numba
import numpy as np
from numba import njit
from numba.extending import overload

from minigpt2.engine import policy
from minigpt2.engine.attention_op import attention_heads
from minigpt2.engine.int8_dot import BLOCK, matvec_int8_blocks, quantize_blocks
from minigpt2.engine.jit import REDUCE, ones
from minigpt2.engine.linear_op import integer_dot_applies
from minigpt2.engine.layer_norm_op import layer_norm_row
from minigpt2.engine.matvec import matvec_out_in_one_row, stored_rows
from minigpt2.weights.packed import PackedWeight

# The four matrices of a block, in the order decode_body uses them.
MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

_attention_serial = attention_heads[1]


def _project(x, data, scale, bias, apply_gelu, prefetch_ahead, x_q, x_scales, out):
    """out = x @ widen(data).T * scale + bias (then GELU): matvec_out_in_one_row, or with int8
    activations (x_q, x_scales: scratch for them) int8_dot's integer kernel."""
    raise NotImplementedError("_project is only callable from Numba-compiled code")


@overload(_project, inline="always")
def _project_by_mode(x, data, scale, bias, apply_gelu, prefetch_ahead, x_q, x_scales, out):
    # chosen when decode_body compiles: x_q None (float32 activations) compiles no integer kernel
    if isinstance(x_q, numba.types.NoneType):
        def float_activations(x, data, scale, bias, apply_gelu, prefetch_ahead, x_q, x_scales, out):
            matvec_out_in_one_row(x, data, scale, bias, apply_gelu, prefetch_ahead, out)
        return float_activations

    def int8_activations(x, data, scale, bias, apply_gelu, prefetch_ahead, x_q, x_scales, out):
        n = x.shape[0]
        quantize_blocks(x, x_q[:n], x_scales[:n // BLOCK])
        matvec_int8_blocks(x_q[:n], x_scales[:n // BLOCK], data, scale, bias, apply_gelu, prefetch_ahead, out)
    return int8_activations


@njit(fastmath=REDUCE, error_model="numpy", cache=True)
def decode_body(x, norms, matrices, scales, biases, gelu, prefetch, attention_scales, eps,
                keys, values, n_past, ln_f_weight, ln_f_bias, x_q, x_scales, out):
    # x [c]: the new token's embedding (wte + wpe), updated in place through the blocks;
    # out [c] = ln_f(x). Per block, as GPT2Block: x += attn(ln_1(x)); x += mlp(ln_2(x)).
    # norms: (ln_1.weight, ln_1.bias, ln_2.weight, ln_2.bias), each [n_layer, c];
    # matrices: per MATRICES entry a tuple of n_layer packed [n_out, n_in] arrays; scales and
    # biases: per MATRICES entry [n_layer, n_out]; gelu, prefetch: per MATRICES entry
    # (gelu a tuple argument, not constants here: a constant bool argument would make Numba
    # compile the kernels once more, apart from the ops route's build);
    # keys, values: per layer the cache's [1, n_head, max_length, head_dim] buffers, whose
    # position n_past receives this token's key and value. x_q, x_scales: None (float32
    # activations), or scratch for the int8 activations of int8_dot (policy.set_int8_compute).
    c = x.shape[0]
    n_head, head_dim = keys[0].shape[1], keys[0].shape[3]
    h = np.empty(c, dtype=np.float32)                                  # a layer norm's output
    qkv = np.empty(3 * c, dtype=np.float32)
    query = np.empty((1, n_head, 1, head_dim), dtype=np.float32)
    attended = np.empty((1, n_head, 1, head_dim), dtype=np.float32)
    projected = np.empty(c, dtype=np.float32)
    act = np.empty(biases[2].shape[1], dtype=np.float32)              # [inner]
    mask = np.ones((1, 1, n_past + 1), dtype=np.bool_)               # one query sees every key
    head_scale = np.ones(n_head, dtype=np.float32)
    no_probs = np.empty((0, 0, 0, 0), dtype=np.float32)
    for layer in range(len(keys)):
        # attention: qkv [3c] -> q, k, v [n_head, head_dim]; k and v go into the cache
        layer_norm_row(x, norms[0][layer], norms[1][layer], eps, h)
        _project(h, matrices[0][layer], scales[0][layer], biases[0][layer], gelu[0],
                 prefetch[0], x_q, x_scales, qkv)
        key, value = keys[layer], values[layer]
        for head in range(n_head):
            start = head * head_dim
            for i in range(head_dim):
                query[0, head, 0, i] = qkv[start + i]
                key[0, head, n_past, i] = qkv[c + start + i]
                value[0, head, n_past, i] = qkv[2 * c + start + i]
        _attention_serial(query, key, value, mask, attention_scales[layer], head_scale, attended, no_probs)
        for head in range(n_head):                                       # merge heads: [c]
            for i in range(head_dim):
                h[head * head_dim + i] = attended[0, head, 0, i]
        _project(h, matrices[1][layer], scales[1][layer], biases[1][layer], gelu[1],
                 prefetch[1], x_q, x_scales, projected)
        for i in range(c):
            x[i] += projected[i]
        # MLP: c -> inner (GELU fused) -> c
        layer_norm_row(x, norms[2][layer], norms[3][layer], eps, h)
        _project(h, matrices[2][layer], scales[2][layer], biases[2][layer], gelu[2],
                 prefetch[2], x_q, x_scales, act)
        _project(act, matrices[3][layer], scales[3][layer], biases[3][layer], gelu[3],
                 prefetch[3], x_q, x_scales, projected)
        for i in range(c):
            x[i] += projected[i]
    layer_norm_row(x, ln_f_weight, ln_f_bias, eps, out)


class DecodeStep:
    """A GPT-2 body's weights gathered for decode_body, once; calling it runs one decode step.

    weights: {checkpoint name: array or PackedWeight} ("h.0.ln_1.weight", ..., "ln_f.bias", as
    GPT2Model.state_dict()); attention_scales: the q.k scale of each layer.
    """

    def __init__(self, weights, n_layer, eps, attention_scales):
        def stacked(suffix):
            return np.stack([np.asarray(weights[f"h.{i}.{suffix}"], dtype=np.float32) for i in range(n_layer)])

        self.norms = tuple(stacked(name) for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"))
        packed = [[weights[f"h.{i}.{name}.weight"] for i in range(n_layer)] for name in MATRICES]
        self.matrices = tuple(tuple(stored_rows(w) for w in kind) for kind in packed)
        self.scales = tuple(np.stack([w.scale if w.scale is not None else ones(w.data.shape[0]) for w in kind])
                            for kind in packed)
        self.biases = tuple(stacked(f"{name}.bias") for name in MATRICES)
        self.gelu = tuple(name == "mlp.c_fc" for name in MATRICES)
        self.prefetch = tuple(policy.one_row_prefetch_rows(kind[0]) for kind in self.matrices)
        self.attention_scales = np.asarray(attention_scales, dtype=np.float32)
        self.eps = float(eps)
        self.ln_f_weight = np.asarray(weights["ln_f.weight"], dtype=np.float32)
        self.ln_f_bias = np.asarray(weights["ln_f.bias"], dtype=np.float32)
        widest = max(kind[0].shape[1] for kind in self.matrices)
        self.x_q, self.x_scales = np.empty(widest, dtype=np.int8), np.empty(widest // BLOCK, dtype=np.float32)

    @staticmethod
    def supports(weights, n_layer):
        """Whether decode_body can run these weights: every block matrix packed, one output per
        row, all of one storage type and one array type (a tuple that Numba can index)."""
        matrices = [weights[f"h.{i}.{name}.weight"] for i in range(n_layer) for name in MATRICES]
        if not all(isinstance(w, PackedWeight) and w.rows_are_outputs for w in matrices):
            return False
        return all(len({numba.typeof(stored_rows(weights[f"h.{i}.{name}.weight"])) for i in range(n_layer)}) == 1
                   for name in MATRICES)

    def applies(self, keys, n_past):
        """Whether a step after n_past cached tokens is short enough for the serial attention."""
        n_head, head_dim = keys[0].shape[1], keys[0].shape[3]
        return policy.run_serial(n_head * (n_past + 1) * head_dim // 4)    # as attention_op counts

    def __call__(self, x, keys, values, n_past):
        """x [c] (the new token's embedding) -> ln_f of the body's output [c]. keys / values: the
        cache's per-layer [1, n_head, max_length, head_dim] buffers; position n_past is written."""
        x = np.array(x, dtype=np.float32)                    # a copy: decode_body updates it in place
        out = np.empty_like(x)
        integer = all(integer_dot_applies(kind[0]) for kind in self.matrices)    # int8, opted in
        decode_body(x, self.norms, self.matrices, self.scales, self.biases, self.gelu, self.prefetch,
                    self.attention_scales, self.eps, tuple(keys), tuple(values), n_past,
                    self.ln_f_weight, self.ln_f_bias, self.x_q if integer else None,
                    self.x_scales if integer else None, out)
        return out

