"""Lesson 08: the block and the full forward pass, ids to logits.

The residual stream is x [b, t, c], the one array that flows from the embeddings (lesson 05) to
the LM head. Each block *adds* to it and never overwrites it; each sublayer reads a layer-normed
copy ("pre-norm"), so the stream itself stays an untouched running sum:

    x = x + attention(ln_1(x))                         lesson 07: mix information across positions
    x = x + c_proj(gelu_new(c_fc(ln_2(x))))            the MLP: per position, c -> 4c -> c

The model: embeddings, n_layer blocks, a final layer norm ln_f, and the LM head, which is the token
embedding again (tied): logits = ln_f(x) @ wte.T, one score per vocab entry, read as lesson 05b's
next-token bets. Weights are in the checkpoint's Conv1D layout [n_in, n_out]: x @ W + b.

Why residuals, why pre-norm, why 4c, why tie, where 124,439,808 and 50257 come from, and how to
read the ablation table: lessons/l08_forward.md. (For a real checkpoint, `minigpt2 verify` compares
with transformers sub-step by sub-step and names the first place where the two part.)

    python -m lessons.l08_forward [--fast] [--figures DIR] [--model ...]
"""

import json

import numpy as np

from lessons import l06_layernorm_gelu as l06
from lessons._common import (REPO_ROOT, check, check_equal, check_true, figure_path, fixture_weights, load_model,
                             parse_args, pyplot, run, save, title)
from lessons.l05_embeddings import embed
from lessons.l06_layernorm_gelu import layer_norm
from lessons.l07_attention import block_attention


def mlp(x, weights, layer, config, pre_norm=True):
    w = lambda name: weights[f"h.{layer}.{name}"]                      # noqa: E731
    from minigpt2.ops import ACTIVATIONS
    act = l06.GELU if config.activation_function == "gelu_new" else ACTIVATIONS[config.activation_function]
    h = layer_norm(x, w("ln_2.weight"), w("ln_2.bias"), config.layer_norm_epsilon) if pre_norm else x
    h = act(h @ w("mlp.c_fc.weight") + w("mlp.c_fc.bias"))            # [b, t, c] -> [b, t, inner]
    return h @ w("mlp.c_proj.weight") + w("mlp.c_proj.bias")           # [b, t, inner] -> [b, t, c]


def block(x, weights, layer, config):
    """One transformer block. The first piece this lesson teaches."""
    x = x + block_attention(x, weights, layer, config)[1]
    return x + mlp(x, weights, layer, config)


def changed_block(x, weights, layer, config, change):
    """The block with one design choice undone (inference only: the weights were trained without it)."""
    norm = lambda a, n: layer_norm(a, weights[f"h.{layer}.{n}.weight"], weights[f"h.{layer}.{n}.bias"])  # noqa: E731
    if change == "skip the block":
        return x
    if change == "drop the attention residual":                        # x = attn(..) instead of x + attn(..)
        x = block_attention(x, weights, layer, config)[1]
        return x + mlp(x, weights, layer, config)
    if change == "post-norm":                                          # GPT-1: normalise the stream after the add
        x = norm(x + block_attention(x, weights, layer, config, pre_norm=False)[1], "ln_1")
        return norm(x + mlp(x, weights, layer, config, pre_norm=False), "ln_2")
    return block(x, weights, layer, config)


def forward(input_ids, weights, config, change=None, changed_layers=()):
    """ids [b, t] -> (hidden_states: n_layer + 1 arrays [b, t, c], logits [b, t, v]). The second piece."""
    positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
    x = embed(input_ids, positions, weights["wte.weight"], weights["wpe.weight"])
    hidden_states = []
    for layer in range(config.n_layer):
        hidden_states.append(x)                                        # the input of each block
        x = changed_block(x, weights, layer, config, change if layer in changed_layers else None)
    x = layer_norm(x, weights["ln_f.weight"], weights["ln_f.bias"], config.layer_norm_epsilon)
    hidden_states.append(x)                                            # transformers: the last is after ln_f
    return hidden_states, x @ weights["wte.weight"].T                  # [b, t, c] @ [c, v] -> [b, t, v]


def parameter_shapes(config):
    """{checkpoint name: shape}, from the config alone. The third piece: where the parameters live."""
    c, inner = config.n_embd, config.inner_dim
    shapes = {"wte.weight": (config.vocab_size, c), "wpe.weight": (config.n_positions, c)}
    for i in range(config.n_layer):
        for name, shape in [("ln_1", (c,)), ("attn.c_attn", (c, 3 * c)), ("attn.c_proj", (c, c)),
                            ("ln_2", (c,)), ("mlp.c_fc", (c, inner)), ("mlp.c_proj", (inner, c))]:
            shapes[f"h.{i}.{name}.weight"], shapes[f"h.{i}.{name}.bias"] = shape, shape[-1:]
    shapes["ln_f.weight"] = shapes["ln_f.bias"] = (c,)
    return shapes


def model_weights(model):
    """The chosen minigpt2 model's tensors under their checkpoint names (no copies): the model keeps
    each weight at the attribute path of its name, so state_dict() needs no name table."""
    return model.transformer.state_dict()


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("the fixture, block by block")
    config, weights, ref = fixture_weights("tiny")
    hidden, logits = forward(ref["input_ids"], weights, config)
    for i, h in enumerate(hidden):
        label = "embeddings" if i == 0 else f"after block {i - 1}" + (", then ln_f" if i == config.n_layer else "")
        print(f"  hidden_states[{i}] {label:26s} std {h.std():7.3f}  max |x| {np.abs(h).max():7.3f}")
    print(f"logits {logits.shape}; row 0's guesses for the next token at each position "
          f"{logits[0].argmax(-1).tolist()}")
    print(f"what you should see: the stream keeps its shape {list(hidden[0].shape)} through every block; the last\n"
          "entry is normalised by ln_f (std ~1); the guesses are arbitrary ids here (random weights)")

    title("where the parameters are: GPT-2 124M derived from its config")
    from minigpt2.config import GPT2Config
    gpt2 = parameter_shapes(GPT2Config())                              # n_embd 768, 12 layers, 50257 x 1024
    sizes = {name: int(np.prod(shape)) for name, shape in gpt2.items()}
    total, per_block = sum(sizes.values()), sum(v for k, v in sizes.items() if k.startswith("h.0."))
    for name, n in [("wte 50257 x 768", sizes["wte.weight"]), ("wpe 1024 x 768", sizes["wpe.weight"]),
                    ("12 blocks x " + f"{per_block:,}", 12 * per_block), ("ln_f", 2 * 768)]:
        print(f"  {name:24s} {n:>12,}  {n / total:6.1%}")
    print(f"  {'total':24s} {total:>12,}   (tying saves a second {sizes['wte.weight']:,} for the LM head)")
    enc = json.loads((REPO_ROOT / "minigpt2" / "data" / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    merges = [m.split() for m in (REPO_ROOT / "minigpt2" / "data" / "gpt2" / "vocab.bpe").read_text(
        encoding="utf-8").splitlines()[1:] if m]                        # line 0 is '#version: 0.2'
    decoder = {i: token for token, i in enc.items()}
    print(f"  vocab {len(enc)} = 256 byte tokens + {len(merges):,} merges (id 256 + r is merge r's result) + "
          f"1 special {decoder[len(enc) - 1]!r}")
    print("what you should see: a third of GPT-2 small is the token table; each block is ~7.1M, two thirds\n"
          "of it in the 4x-wide MLP (c_fc + c_proj: 2 x 768 x 3072 weights)")

    title("the chosen model on a prompt")
    model, tok, description = load_model(args)
    prompt = "Alan Turing theorized that computers would one day become"
    ids = np.array([tok.encode(prompt)])
    mw = model_weights(model)
    hidden_m, logits_m = forward(ids, mw, model.config)
    top = np.argsort(-logits_m[0, -1])[:5]
    print(f"{prompt!r} -> the last position's five best bets for the next token:")
    for i in top:
        print(f"   {tok.decode([int(i)])!r:16s} logit {logits_m[0, -1, i]:7.2f}")
    print("what you should see: real gpt2 continues the sentence; the Shakespeare demo model bets on\n"
          "newlines and punctuation (its training text is short lines of verse)")
    path = figure_path(args, "l08_activation_stats.png")
    if path:
        trace = {}
        model(ids, trace=trace)
        keys = ["embed"] + [k for k in trace if k.endswith(".resid_1") or k.endswith(".out")]
        sizes_m = [np.abs(trace[k]).max() for k in keys]
        jump = int(np.argmax(np.array(sizes_m[1:]) / np.array(sizes_m[:-1]))) + 1
        names = [k.replace("resid_1", "attn").replace(".out", ".mlp") for k in keys]
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(sizes_m, "o-", label="max |x|")
        ax.plot([trace[k].std() for k in keys], "s-", label="std")
        ax.annotate(f"x{sizes_m[jump] / sizes_m[jump - 1]:.0f} after {names[jump]}", (jump, sizes_m[jump]),
                    (jump + 0.5, sizes_m[jump] * 0.3), arrowprops={"arrowstyle": "->"}, fontsize=8)
        ax.set_xticks(range(len(keys)), names, rotation=60, fontsize=7)
        ax.set_xlabel("the residual stream after each step (x = x + attention, x = x + MLP)", fontsize=8)
        ax.set_ylabel("size of the stream (log scale)", fontsize=8)
        ax.set_yscale("log"), ax.legend(), ax.grid(alpha=0.3)
        ax.set_title(f"{prompt!r}\n{description}", fontsize=8)
        save(fig, path)
        print(f"what you should see (figure): the biggest jump is after {names[jump]} "
              f"(x{sizes_m[jump] / sizes_m[jump - 1]:.0f}); the sublayers never see that size, since each reads a "
              "layer-normed copy")

    title("undo one design choice, keep the trained weights: perplexity on Shakespeare")
    text = (REPO_ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[-3000:]
    sample = np.array([tok.encode(text)[: min(48 if args.fast else 160, model.config.n_positions)]])
    from lessons.l05b_objective import next_token_loss
    middle = (model.config.n_layer // 2,)
    every = tuple(range(model.config.n_layer))
    perplexity = {}
    for change, layers in [(None, ()), ("skip the block", (0,)), ("skip the block", middle),
                           ("drop the attention residual", middle), ("post-norm", every)]:
        name = f"{change} {layers if len(layers) < len(every) else '(every block)'}" if change else "as trained"
        perplexity[name] = float(np.exp(next_token_loss(forward(sample, mw, model.config, change, layers)[1], sample)))
        print(f"  {name:42s} perplexity {perplexity[name]:12.1f}")
    print(f"what you should see: every change costs perplexity (uniform guessing: {model.config.vocab_size}). A\n"
          "middle block can go (the stream carries on without it); block 0 cannot (its MLP is the big jump\n"
          "in the figure); dropping a residual throws the stream away; post-norm weights never learned the\n"
          "rescaled stream. No training here: the trained weights' dependence on each choice stands in for it")
    if "RANDOM" in description:
        print("(random weights here: they depend on nothing, so the table means nothing; use the demo model)")

    title("checks")
    for i, (h, r) in enumerate(zip(hidden, ref["hidden_states"])):
        check(f"hidden_states[{i}] == transformers (fixture tiny)", h, r, tol=1e-4, relative=True)
    check("logits == transformers (fixture tiny)", logits, ref["logits"], tol=1e-5, relative=True)
    cfg, w, r = fixture_weights("odd")          # n_head 3, n_inner 80, erf GELU, 3 layers
    check("logits == transformers (fixture odd: n_head 3, n_inner 80)", forward(r["input_ids"], w, cfg)[1],
          r["logits"], tol=1e-5, relative=True)
    from minigpt2.model import GPT2LMHeadModel
    check("logits == minigpt2 GPT2LMHeadModel (numpy)", logits,
          GPT2LMHeadModel(config, weights, backend="numpy")(ref["input_ids"]).logits, tol=1e-5, relative=True)
    check("chosen model: logits == minigpt2's own forward", logits_m, model(ids).logits, tol=1e-4, relative=True)
    for name, cfg_, state in [("fixture odd", cfg, w), ("chosen model", model.config, mw)]:
        check_equal(f"parameter_shapes(config) == the state_dict's names and shapes ({name})",
                    sorted(parameter_shapes(cfg_).items()), sorted((k, tuple(v.shape)) for k, v in state.items()))
    check_equal("GPT-2 124M total == transformers GPT2LMHeadModel(GPT2Config()).num_parameters()", total,
                124_439_808)
    no_qkv_bias = total - 12 * 3 * 768                                  # LLMs-from-scratch ch. 4 drops these
    check_equal("without the q, k, v biases == LLMs-from-scratch ch. 4's count (tied)", no_qkv_bias, 124_412_160)
    check_equal("... with an untied LM head == its 163,009,536", no_qkv_bias + sizes["wte.weight"], 163_009_536)
    check_equal("vocab = 256 bytes + 50,000 merges + 1 (encoder.json, vocab.bpe)", len(enc), 256 + len(merges) + 1)
    check_equal("token 256 + r is merge r's two halves joined, for every r", [decoder[256 + r] for r in
                range(len(merges))], [a + b for a, b in merges])
    if "RANDOM" not in description:
        check_true("every undone design choice raises the trained model's perplexity",
                   min(v for k, v in perplexity.items() if k != "as trained") > perplexity["as trained"])
    return 0


if __name__ == "__main__":
    run(main)
