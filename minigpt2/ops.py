"""The GPT-2 forward-pass ops in plain NumPy: the readable reference (the lesson).

Every op is a few lines with the shapes in comments. A backend is a module that provides the
ops named in BACKEND_OPS, with these signatures: this module is one (``backend="numpy"``), and
``minigpt2.engine`` is the other (``backend="numba"``, the same functions as Numba kernels).
``model.py`` takes those ops from whichever backend it was given and everything else from here.

Shape letters: b batch, t new tokens, s tokens attended to (past + new), c = n_embd,
h = n_head, d = head_dim = c // h, v = vocab_size. Everything is float32.
"""

import math

import numpy as np

# The backend contract: the ops model.py calls through its backend. ops.py and minigpt2.engine
# both provide every one (tests/test_layers.py checks the names and signatures).
BACKEND_OPS = ("layer_norm", "linear", "linear_gelu", "gelu_new", "attention")


# ---- embeddings ----------------------------------------------------------------------------------

def embed(input_ids, position_ids, wte, wpe):
    """Token embedding plus position embedding."""
    return wte[input_ids] + wpe[position_ids]        # [b, t] ids, [b, t] positions -> [b, t, c]


# ---- layer norm ----------------------------------------------------------------------------------

def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise each vector to mean 0, variance 1, then scale and shift.

    The variance is the *biased* one (divide by c, as np.var), and eps goes inside the sqrt.
    """
    mean = x.mean(axis=-1, keepdims=True)                       # [..., c] -> [..., 1]
    var = np.square(x - mean).mean(axis=-1, keepdims=True)      # [..., c] -> [..., 1]
    return (x - mean) / np.sqrt(var + eps) * weight + bias     # [..., c]


# ---- linear layers -------------------------------------------------------------------------------

def linear(x, weight, bias):
    """x @ W + b, with W in the checkpoint's Conv1D layout [n_in, n_out] (no transpose).

    bias may be None (the LM head, which is wte.T with no bias).
    """
    out = x.reshape(-1, x.shape[-1]) @ weight                  # [rows, n_in] -> [rows, n_out]
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[1])         # [..., n_out]


# ---- activations ---------------------------------------------------------------------------------
# transformers names each one in config.activation_function; these are its formulas (ACT2FN).

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_new(x):
    """GPT-2's GELU: the tanh approximation that OpenAI trained with (not the erf form)."""
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))


def linear_gelu(x, weight, bias):
    """gelu_new(linear(x, weight, bias)): the MLP's first layer. The engine fuses the two."""
    return gelu_new(linear(x, weight, bias))                  # [..., n_in] -> [..., n_out]


def gelu_fast(x):
    """The same tanh approximation, written x * 0.7978845608 * (1 + 0.044715 x^2)."""
    return 0.5 * x * (1.0 + np.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


_erf = np.frompyfunc(math.erf, 1, 1)   # NumPy has no erf; math.erf is exact to float64


def gelu(x):
    """The exact GELU, x * Phi(x), with the error function (transformers' "gelu")."""
    erf = _erf(x.astype(np.float64) / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x * (1.0 + erf)).astype(x.dtype)


def quick_gelu(x):
    return x * sigmoid(1.702 * x)


def relu(x):
    return np.maximum(x, 0)


def relu6(x):
    return np.clip(x, 0, 6)


def sigmoid(x):
    # 1 / (1 + e^-x), written so that exp never overflows for large |x|
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype)


def silu(x):
    return x * sigmoid(x)


def tanh(x):
    return np.tanh(x)


def identity(x):
    return x


def gelu_10(x):
    return np.clip(gelu(x), -10, 10)


def mish(x):
    return x * np.tanh(np.logaddexp(0, x))        # x * tanh(softplus(x))


ACTIVATIONS = {
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": gelu_new,      # torch's gelu(approximate="tanh"): the same formula
    "gelu_python_tanh": gelu_new,
    "gelu_accurate": gelu_new,          # again the same tanh formula, constant precomputed
    "gelu_fast": gelu_fast,
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_10": gelu_10,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "relu6": relu6,
    "silu": silu,
    "swish": silu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "linear": identity,
    "mish": mish,
}


# ---- attention -----------------------------------------------------------------------------------

def split_heads(x, n_head):
    """Give each head its own slice of the channels."""
    b, t, c = x.shape
    return x.reshape(b, t, n_head, c // n_head).transpose(0, 2, 1, 3)   # [b, t, c] -> [b, h, t, d]


def merge_heads(x):
    """Undo split_heads: put the heads side by side again."""
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)                 # [b, h, t, d] -> [b, t, c]


def causal_mask(n_new, n_past=0, attention_mask=None):
    """Which keys each query may see: True = visible.

    Query i (absolute index n_past + i) sees key j when j <= n_past + i, and, when an
    ``attention_mask`` [b, n_past + n_new] is given, only keys whose mask is 1 (not padding).
    Returns [b, n_new, n_past + n_new] bool (b = 1 without an attention_mask).
    """
    query_index = n_past + np.arange(n_new)                             # [t]
    key_index = np.arange(n_past + n_new)                               # [s]
    mask = key_index[None, :] <= query_index[:, None]                   # [t, s]
    if attention_mask is None:
        return mask[None]                                               # [1, t, s]
    return mask[None] & attention_mask.astype(bool)[:, None, :]         # [b, t, s]


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)), with the maximum subtracted first so that exp cannot overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention(query, key, value, mask, scale, head_mask=None, output_attentions=False):
    """Scaled dot-product attention with a boolean mask.

    query [b, h, t, d], key and value [b, h, s, d], mask [b, t, s] (True = may attend),
    head_mask [h] multiplies each head's probabilities (None = all ones).
    Returns (out [b, h, t, d], probs [b, h, t, s] or None).

    Masked keys are *excluded* (np.where), not pushed down by adding -1e4 or -inf: a query row
    with no visible key at all (a padding row) gets all-zero probabilities and a zero output
    instead of NaN or a uniform average over padding.
    """
    scores = (query @ key.swapaxes(-1, -2)) * np.float32(scale)   # [b, h, t, d] @ [b, h, d, s] -> [b, h, t, s]
    visible = mask[:, None, :, :]                                   # [b, 1, t, s], same for every head
    # softmax over the visible keys only
    row_max = np.where(visible, scores, -np.inf).max(axis=-1, keepdims=True)        # [b, h, t, 1]
    row_max = np.where(np.isfinite(row_max), row_max, 0)            # rows with nothing visible
    exps = np.where(visible, np.exp(np.where(visible, scores - row_max, 0)), 0)     # [b, h, t, s]
    total = exps.sum(axis=-1, keepdims=True)                        # >= 1 if anything is visible
    probs = exps / np.where(total > 0, total, 1)                    # empty rows stay all zero
    if head_mask is not None:
        probs = probs * np.asarray(head_mask, np.float32)[None, :, None, None]
    # a key that no query may see (padding) has probability exactly 0, but 0 * NaN is NaN: its
    # value is zeroed, so a NaN there cannot reach a real row
    seen = mask.any(axis=1)[:, None, :, None]                       # [b, 1, s, 1]
    out = probs @ np.where(seen, value, 0)                          # [b, h, t, s] @ [b, h, s, d] -> [b, h, t, d]
    return out, (probs if output_attentions else None)


# ---- loss ------------------------------------------------------------------------------------------

def log_softmax(x, axis=-1):
    """log(softmax(x)), computed without forming the softmax (no log of 0 for tiny probabilities)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(logits, labels, ignore_index=-100):
    """Mean of -log p(label) over the positions whose label is not ``ignore_index``.

    logits [n, v] float, labels [n] int. Returns a float32 scalar; NaN if every label is
    ignored (0 / 0, as torch's cross_entropy).
    """
    keep = labels != ignore_index                                   # [n]
    logp = log_softmax(logits[keep].astype(np.float64))             # [k, v], float64 for the sum
    picked = logp[np.arange(len(logp)), labels[keep]]               # [k]
    if picked.size == 0:
        return np.float32(np.nan)
    return np.float32(-picked.mean())
