"""Lesson 07: causal self-attention, built up from averaging the past.

Lesson 05b's objective says position i predicts token i + 1 from tokens 0..i. So each position
needs a way to read its past, and must never read its future. Attention is that reading, in
four steps, each one a few lines below:
    1. average the past:  out = (tril / row counts) @ x          every earlier token counts alike
    2. let data choose:   scores = q @ k^T                       query i asks, key j answers
    3. mask + softmax:    probs = softmax(scores, keys 0..i)     weights >= 0, rows sum to 1, no future
    4. scale + heads:     scores * 1/sqrt(head_dim), n_head heads of head_dim channels side by side
GPT-2's layer, with shapes (the toy's values v are x itself):
    h = layer_norm(x, ln_1)                                  [b, t, c]
    q, k, v = split(h @ c_attn.weight + c_attn.bias, 3)      [b, t, 3c] -> 3 x [b, h, t, head_dim]
    probs = softmax(q @ k^T * scale, causal mask)            [b, h, t, t]
    out = probs @ v -> [b, t, c] -> @ c_proj                 heads side by side again
Why the scale, why not -inf, the flags, and how to read the heads figure: lessons/l07_attention.md.

    python -m lessons.l07_attention [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons._common import (check, check_true, figure_path, fixture_weights, load_model, parse_args, pyplot,
                             reference_npz, run, save, title, visible)
from lessons.l05b_objective import log_softmax
from lessons.l06_layernorm_gelu import layer_norm


def causal_mask(t):
    """[t, t] bool, True = may attend: query i sees keys 0..i."""
    return np.tril(np.ones((t, t), dtype=bool))


MASK = causal_mask      # the model path's mask (the toy calls causal_mask itself); tests swap in wrong ones


def attention_scale(config, layer):
    """The factor on q.k: 1/sqrt(head_dim) (scale_attn_weights), also 1/(layer + 1) if that flag is on."""
    scale = config.head_dim ** -0.5 if config.scale_attn_weights else 1.0
    return scale / (layer + 1) if config.scale_attn_by_inverse_layer_idx else scale


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


def block_attention(x, weights, layer, config, mask=None, pre_norm=True):
    """The attention half of block `layer` on its input x [b, t, c] -> (probs, output [b, t, c]).
    mask [b, t, t] bool (True = may attend) defaults to MASK(t) (lesson 12 adds padding); pre_norm=False
    reads x itself, not ln_1(x) (lesson 08's post-norm experiment)."""
    w = lambda name: weights[f"h.{layer}.{name}"]                      # noqa: E731
    h = layer_norm(x, w("ln_1.weight"), w("ln_1.bias"), config.layer_norm_epsilon) if pre_norm else x
    qkv = h @ w("attn.c_attn.weight") + w("attn.c_attn.bias")          # [b, t, c] -> [b, t, 3c]
    q, k, v = (split_heads(a, config.n_head) for a in np.split(qkv, 3, axis=-1))
    mask = MASK(x.shape[1]) if mask is None else mask[:, None]         # [t, t] or [b, 1, t, t]
    probs = attention_probs(q, k, mask, attention_scale(config, layer))  # [b, h, t, t]
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)            # [b, h, t, d] -> [b, t, c]
    return probs, out @ w("attn.c_proj.weight") + w("attn.c_proj.bias")


def toy_attention(x, wq, wk):
    """Steps 2-3 on a toy x [t, c]: data-dependent weights, masked softmax -> (weights [t, t], out [t, c])."""
    q, k = x @ wq, x @ wk                                              # [t, c] -> [t, d]
    probs = attention_probs(q[None, None], k[None, None], causal_mask(len(x)), wq.shape[1] ** -0.5)[0, 0]
    return probs, probs @ x


def entropy(p):
    return -(p * np.log(np.where(p > 0, p, 1))).sum(-1)                # nats; ln(n) for a uniform row


def head_pattern(p, labels):
    """One head's probabilities [t, t] -> its most common habit (queries 2.. by their top key), or 'mixed'."""
    queries = np.arange(2, p.shape[0])
    top = p[queries].argmax(-1)
    common = np.bincount(top).argmax()
    habits = {"first-token sink": top == 0, "previous token": top == queries - 1,
              "current token": top == queries, f"one key '{labels[common]}'": top == common}
    name, hits = max(habits.items(), key=lambda item: item[1].mean())
    return f"{name} ({hits.mean():.0%} of queries)" if hits.mean() >= 0.5 else "mixed"


def main(argv=None):
    args = parse_args(__doc__, argv)
    rng = np.random.default_rng(0)

    title("step 1: every position averages its past (a lower-triangular matrix)")
    x_toy = rng.standard_normal((5, 3))                                # 5 tokens, 3 channels
    mask = causal_mask(5)
    average = mask / mask.sum(-1, keepdims=True)                       # row i: 1/(i+1) on keys 0..i
    print(np.array2string(average, precision=2, suppress_small=True))
    print("what you should see: row i spreads weight 1/(i+1) over keys 0..i and 0 on the future, so\n"
          "out[i] = mean(x[0..i]): a token can use its past, and (lesson 05b) cannot peek at its target")

    title("steps 2-3: the data chooses the weights (q @ k^T, masked softmax)")
    wq, wk = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    toy_probs, toy_out = toy_attention(x_toy, wq, wk)
    print(np.array2string(toy_probs, precision=2, suppress_small=True))
    print("what you should see: still 0 above the diagonal and rows summing to 1, but no longer equal:\n"
          "query i scores key j by q_i . k_j, and the softmax turns the scores into weights")

    title("step 4: why divide by sqrt(head_dim)")
    d, keys, n = 64, 32, 2000 if args.fast else 20000                  # n queries, unit-variance entries
    dots = np.einsum("nd,nkd->nk", rng.standard_normal((n, d)), rng.standard_normal((n, keys, d)))  # [n, keys]
    softmax = lambda z: np.exp(log_softmax(z))                         # noqa: E731
    for name, s in (("q.k", dots), ("q.k / sqrt(64)", dots / np.sqrt(d))):
        p = softmax(s)
        print(f"  {name:15s} variance {s.var():6.2f}; softmax over {keys} keys: entropy {entropy(p).mean():.2f} "
              f"nats (uniform {np.log(keys):.2f}), largest weight {p.max(-1).mean():.2f}")
    print(f"what you should see: a sum of {d} unit products has variance {d}; unscaled, the softmax is nearly\n"
          "one-hot (low entropy, tiny gradients for every other key); scaled, variance 1 and soft weights")

    title("one layer of the fixture, step by step")
    config, weights, ref = fixture_weights("tiny")
    x = ref["hidden_states"][0]                                          # input of block 0
    probs, out = block_attention(x, weights, 0, config)
    above = probs[..., ~np.tri(x.shape[1], dtype=bool)]                # every (query, future key) pair
    print(f"x {x.shape}, n_head {config.n_head}, head_dim {config.head_dim} -> probs {probs.shape}; "
          "sequence 0, head 0, the first 5 queries (rows) and keys (columns):")
    print(np.array2string(probs[0, 0, :5, :5], precision=3, suppress_small=True))
    print(f"rows sum to 1: {np.allclose(probs.sum(-1), 1)}; largest weight above the diagonal, every head "
          f"and query: {above.max():.1f}")
    print("what you should see: the same shape as the toy, one [t, t] matrix per head and sequence")

    title("masking: -inf, a large negative, or exclusion")
    row, some, none = np.array([2.0, 1.0, 0.5]), np.array([True, True, False]), np.zeros(3, bool)
    for name, fill in [("-inf", -np.inf), ("finfo(float32).min", np.finfo(np.float32).min)]:
        with np.errstate(invalid="ignore"):
            print(f"  fill {name:20s}: 2 of 3 keys visible {np.round(softmax(np.where(some, row, fill)), 3)}"
                  f";  none visible {np.round(softmax(np.where(none, row, fill)), 3)}")
    empty = attention_probs(np.ones((1, 1, 1, 2)), np.ones((1, 1, 3, 2)), np.zeros((1, 3), bool), 1.0)
    print(f"  attention_probs excludes masked keys: none visible -> {empty[0, 0, 0]} (no NaN)")
    print("what you should see: with nothing visible, -inf gives NaN, a large negative a fake uniform row, exclusion 0")

    title("the chosen model's attention maps")
    model, tok, description = load_model(args)
    text = "First Citizen:\nBefore we" + ("" if args.fast else " proceed any further, hear me speak.")
    ids = tok.encode(text)
    attentions = model(np.array([ids]), output_attentions=True).attentions   # n_layer x [1, h, t, t]
    labels = [visible(tok.decode([i])) for i in ids]
    n_layer, n_head = model.config.n_layer, model.config.n_head
    layers = sorted({round(i * (n_layer - 1) / 3) for i in range(4)})      # up to 4 layers, first and last
    heads = range(min(n_head, 4))
    patterns = {(li, hi): head_pattern(attentions[li][0, hi], labels) for li in layers for hi in heads}
    for li in layers:
        print(f"  layer {li}: " + "; ".join(f"head {hi} {patterns[li, hi]}" for hi in heads))
    print("what you should see (figure): a bright column = one key read by every later query (the demo model:\n"
          "':' or ' Citizen'); the first column = a first-token sink; a line just below the diagonal = a\n"
          "previous-token head. Real gpt2 shows all three; random weights show no habit")
    path = figure_path(args, "l07_attention_heads.png")
    if path:
        plt = pyplot()
        fig, axes = plt.subplots(len(layers), len(heads), figsize=(3.0 * len(heads) + 1, 3.0 * len(layers)),
                                 squeeze=False)
        for (r, li), (c, hi) in ((a, b) for a in enumerate(layers) for b in enumerate(heads)):
            ax = axes[r, c]
            image = ax.imshow(attentions[li][0, hi], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {li} head {hi}\n{patterns[li, hi]}", fontsize=7)
            ax.set_xticks(range(len(ids)), labels if r == len(layers) - 1 else [], rotation=90, fontsize=6)
            ax.set_yticks(range(len(ids)), labels if c == 0 else [], fontsize=6)
        fig.colorbar(image, ax=axes, shrink=0.6, label="attention probability (each row sums to 1)")
        fig.supxlabel("key (the token being read)", fontsize=8), fig.supylabel("query (the token reading)")
        fig.suptitle(f"attention per head; the upper triangle is the future, always 0\n{description}", fontsize=8)
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
    _, lib_probs = ops.attention(num["q"], num["k"], num["v"], num["mask"], 1 / np.sqrt(8), output_attentions=True)
    check("probs == minigpt2.ops.attention", p, lib_probs, tol=1e-6)
    check("toy step 1: the causal average == the running mean cumsum(x) / count (by hand)", average @ x_toy,
          np.cumsum(x_toy, 0) / np.arange(1, 6)[:, None], tol=1e-12)
    changed = x_toy + np.eye(5)[-1][:, None]                           # only the last token changes
    check("toy steps 2-3: changing the last token changes no earlier output (lesson 05b's rule)",
          toy_attention(changed, wq, wk)[1][:-1], toy_out[:-1], tol=0)
    check(f"step 4: var(q.k) ~ head_dim = {d} (by hand: a sum of {d} unit-variance products)", dots.var(), d,
          tol=0.1, relative=True)
    check_true("step 4: the scaled softmax keeps more entropy than the unscaled one",
               entropy(softmax(dots / np.sqrt(d))).mean() > 2 * entropy(softmax(dots)).mean())
    return 0


if __name__ == "__main__":
    run(main)
