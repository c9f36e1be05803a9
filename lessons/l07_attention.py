"""Lesson 07: causal self-attention, head by head.

    h = layer_norm(x, ln_1)                                  [b, t, c]
    q, k, v = split(h @ c_attn.weight + c_attn.bias, 3)      [b, t, 3c] -> 3 x [b, t, c]
    q, k, v -> [b, n_head, t, head_dim]                      each head gets head_dim channels
    scores = q @ k^T * scale                                 [b, h, t, t]
    scores where the mask is False -> excluded               a token never sees the future
    probs = softmax(scores)                                  each row sums to 1
    out = probs @ v -> [b, t, c] -> @ c_proj                 heads side by side again

Two config flags set `scale`: scale_attn_weights (default True) divides by sqrt(head_dim), and
scale_attn_by_inverse_layer_idx (default False) also divides by layer_idx + 1.

The mask: query i sees keys 0..i (causal), and never a padding key. Masked scores must get
probability exactly 0. Adding -inf works until a row has *no* visible key (a padding query):
then softmax is 0/0 = NaN, and a NaN in one row can poison real rows later (0 x NaN = NaN).
So `attention_probs` (like minigpt2.ops.attention) excludes masked keys, and such a row gets
all-zero probabilities.

    python -m lessons.l07_attention [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons._common import (check, figure_path, fixture_weights, load_model, parse_args, pyplot,
                             reference_npz, run, save, title, visible)
from lessons.l06_layernorm_gelu import layer_norm


def causal_mask(t):
    """[t, t] bool, True = may attend: query i sees keys 0..i."""
    return np.tril(np.ones((t, t), dtype=bool))


MASK = causal_mask      # the mask the checks use; a test swaps in a wrong one to see them fail


def attention_probs(q, k, mask, scale):
    """q, k [b, h, t, d], mask [.., t, s] bool -> probs [b, h, t, s]. The piece this lesson teaches.

    Masked keys are excluded, so a row with no visible key (a padding query) gets zeros, not NaN."""
    scores = q @ k.swapaxes(-1, -2) * scale                            # [b, h, t, s]
    row_max = np.where(mask, scores, -np.inf).max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0)               # rows with nothing visible
    e = np.where(mask, np.exp(np.where(mask, scores - row_max, 0)), 0)  # masked keys: exactly 0
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1)                           # each visible row sums to 1


def split_heads(a, n_head):
    b, t, c = a.shape
    return a.reshape(b, t, n_head, c // n_head).transpose(0, 2, 1, 3)   # [b, t, c] -> [b, h, t, d]


def block_attention(x, weights, layer, config, mask=None):
    """The attention half of block `layer` on its input x [b, t, c] -> (probs, output [b, t, c]).

    mask [b, t, t] bool (True = may attend) defaults to MASK(t), the causal mask (lesson 12 adds padding)."""
    w = lambda name: weights[f"h.{layer}.{name}"]                      # noqa: E731
    h = layer_norm(x, w("ln_1.weight"), w("ln_1.bias"), config.layer_norm_epsilon)
    qkv = h @ w("attn.c_attn.weight") + w("attn.c_attn.bias")          # [b, t, c] -> [b, t, 3c]
    q, k, v = (split_heads(a, config.n_head) for a in np.split(qkv, 3, axis=-1))
    scale = config.head_dim ** -0.5 if config.scale_attn_weights else 1.0
    if config.scale_attn_by_inverse_layer_idx:
        scale /= layer + 1
    mask = MASK(x.shape[1]) if mask is None else mask[:, None]         # [t, t] or [b, 1, t, t]
    probs = attention_probs(q, k, mask, scale)                         # [b, h, t, t]
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)            # [b, h, t, d] -> [b, t, c]
    return probs, out @ w("attn.c_proj.weight") + w("attn.c_proj.bias")


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("one layer of the fixture, step by step")
    config, weights, ref = fixture_weights("tiny")
    x = ref["hidden_states"][0]                                          # input of block 0
    probs, out = block_attention(x, weights, 0, config)
    print(f"x {x.shape}, n_head {config.n_head}, head_dim {config.head_dim} -> probs {probs.shape}")
    print("head 0, row 0's probabilities (query i sees keys 0..i):")
    print(np.array2string(probs[0, 0, :5, :5], precision=3, suppress_small=True))
    print(f"rows sum to 1: {np.allclose(probs.sum(-1), 1)}; above the diagonal: {probs[..., 0, 1:].max():.1f}")

    title("masking: -inf, a large negative, or exclusion")
    row, some, none = np.array([2.0, 1.0, 0.5]), np.array([True, True, False]), np.zeros(3, bool)
    softmax = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()      # noqa: E731
    for name, fill in [("-inf", -np.inf), ("finfo(float32).min", np.finfo(np.float32).min)]:
        with np.errstate(invalid="ignore"):
            print(f"  fill {name:20s}: 2 of 3 keys visible {np.round(softmax(np.where(some, row, fill)), 3)}"
                  f";  none visible {np.round(softmax(np.where(none, row, fill)), 3)}")
    empty = attention_probs(np.ones((1, 1, 1, 2)), np.ones((1, 1, 3, 2)), np.zeros((1, 3), bool), 1.0)
    print(f"  attention_probs excludes masked keys: none visible -> {empty[0, 0, 0]} (no NaN)")

    title("the chosen model's attention maps")
    model, tok, description = load_model(args)
    text = "The cat sat on the mat because it was tired." if not args.fast else "The cat sat on the mat."
    ids = tok.encode(text)
    out_model = model(np.array([ids]), output_attentions=True)
    labels = [visible(tok.decode([i])) for i in ids]
    layer = model.config.n_layer - 1
    heads = min(model.config.n_head, 4 if args.fast else 12)
    path = figure_path(args, "l07_attention_heads.png")
    if path:
        plt = pyplot()
        cols = min(heads, 4)
        rows = (heads + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
        for head, ax in enumerate(axes.flat):
            ax.axis("off")
            if head >= heads:
                continue
            ax.imshow(out_model.attentions[layer][0, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            if head % cols == 0:
                ax.axis("on"), ax.set_yticks(range(len(ids)), labels, fontsize=6), ax.set_xticks([])
        fig.suptitle(f"attention probabilities (rows = queries, cols = keys)\n{description}", fontsize=8)
        save(fig, path)

    title("checks")
    check("probs == transformers' attentions[0] (fixture tiny)", probs, ref["attentions"][0], tol=1e-5)
    probs1, _ = block_attention(ref["hidden_states"][1], weights, 1, config)
    check("layer 1 probs == transformers' attentions[1]", probs1, ref["attentions"][1], tol=1e-5)
    for name in ("inverse_layer_idx", "unscaled"):      # the two scaling flags
        cfg, w, r = fixture_weights(name)
        last = cfg.n_layer - 1
        p, _ = block_attention(r["hidden_states"][last], w, last, cfg)
        check(f"{name} (scale_attn_weights={cfg.scale_attn_weights}, by_inverse_layer_idx="
              f"{cfg.scale_attn_by_inverse_layer_idx}) layer {last} == transformers", p, r["attentions"][last],
              tol=1e-5)
    num = reference_npz("numerics.npz")                  # padding mask: torch's scaled_dot_product_attention
    p = attention_probs(num["q"], num["k"], num["mask"][:, None], 1 / np.sqrt(num["q"].shape[-1]))
    check("causal + padding mask: probs == torch softmax(masked_fill(-inf))", p, num["attn_probs"], tol=1e-5)
    check("probs @ v == torch scaled_dot_product_attention", p @ num["v"], num["attn_out"], tol=1e-5)
    check("a query with no visible key gets all-zero probabilities, not NaN", empty, np.zeros((1, 1, 1, 3)), tol=0)
    from minigpt2 import ops
    lib_out, lib_probs = ops.attention(num["q"], num["k"], num["v"], num["mask"], 1 / np.sqrt(8),
                                       output_attentions=True)
    check("probs == minigpt2.ops.attention", p, lib_probs, tol=1e-6)
    return 0


if __name__ == "__main__":
    run(main)
