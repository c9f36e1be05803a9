"""Lesson 08: the block and the full forward pass, ids to logits.

A block is two residual steps, each reading a layer-normed copy of the stream ("pre-norm"):

    x = x + attention(ln_1(x))                         lesson 07
    x = x + c_proj(gelu_new(c_fc(ln_2(x))))            the MLP: c -> 4c -> c, lesson 06's GELU

The model: embeddings (lesson 05), n_layer blocks, a final layer norm ln_f, and the LM head,
which is the token embedding again (tied): logits = ln_f(x) @ wte.T, one score per vocab entry.
Weights are in the checkpoint's Conv1D layout [n_in, n_out], so every linear layer is x @ W + b.

We run it on transformers-made fixtures and compare every hidden state and the logits, then
run the chosen model on a prompt: the next-token guesses, and a figure of the residual stream's
size per layer. (For a real checkpoint, `minigpt2 verify` does this comparison with transformers
sub-step by sub-step and names the first place where the two part.)

    python -m lessons.l08_forward [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons import l06_layernorm_gelu as l06
from lessons._common import (check, figure_path, fixture_weights, load_model, parse_args, pyplot, run,
                             save, title)
from lessons.l05_embeddings import embed
from lessons.l06_layernorm_gelu import layer_norm
from lessons.l07_attention import block_attention


def mlp(x, weights, layer, config):
    w = lambda name: weights[f"h.{layer}.{name}"]                      # noqa: E731
    from minigpt2.ops import ACTIVATIONS
    act = l06.GELU if config.activation_function == "gelu_new" else ACTIVATIONS[config.activation_function]
    h = layer_norm(x, w("ln_2.weight"), w("ln_2.bias"), config.layer_norm_epsilon)
    h = act(h @ w("mlp.c_fc.weight") + w("mlp.c_fc.bias"))            # [b, t, c] -> [b, t, inner]
    return h @ w("mlp.c_proj.weight") + w("mlp.c_proj.bias")           # [b, t, inner] -> [b, t, c]


def block(x, weights, layer, config):
    """One transformer block. The first piece this lesson teaches."""
    x = x + block_attention(x, weights, layer, config)[1]
    return x + mlp(x, weights, layer, config)


def forward(input_ids, weights, config):
    """ids [b, t] -> (hidden_states: n_layer + 1 arrays [b, t, c], logits [b, t, v]). The second piece."""
    positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
    x = embed(input_ids, positions, weights["wte.weight"], weights["wpe.weight"])
    hidden_states = []
    for layer in range(config.n_layer):
        hidden_states.append(x)                                        # the input of each block
        x = block(x, weights, layer, config)
    x = layer_norm(x, weights["ln_f.weight"], weights["ln_f.bias"], config.layer_norm_epsilon)
    hidden_states.append(x)                                            # transformers: the last is after ln_f
    return hidden_states, x @ weights["wte.weight"].T                  # [b, t, c] @ [c, v] -> [b, t, v]


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
        label = "embeddings" if i == 0 else "after ln_f" if i == config.n_layer else f"after block {i - 1}"
        print(f"  hidden_states[{i}] {label:16s} std {h.std():7.3f}  max |x| {np.abs(h).max():7.3f}")
    print(f"logits {logits.shape}; row 0's next-token guesses {logits[0].argmax(-1).tolist()}")

    title("the chosen model on a prompt")
    model, tok, description = load_model(args)
    prompt = "Alan Turing theorized that computers would one day become"
    ids = np.array([tok.encode(prompt)])
    mw = model_weights(model)
    hidden_m, logits_m = forward(ids, mw, model.config)
    top = np.argsort(-logits_m[0, -1])[:5]
    print(f"{prompt!r} ->")
    for i in top:
        print(f"   {tok.decode([int(i)])!r:16s} logit {logits_m[0, -1, i]:7.2f}")
    path = figure_path(args, "l08_activation_stats.png")
    if path:
        trace = {}
        model(ids, trace=trace)
        keys = ["embed"] + [k for k in trace if k.endswith(".resid_1") or k.endswith(".out")]
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([np.abs(trace[k]).max() for k in keys], "o-", label="max |x|")
        ax.plot([trace[k].std() for k in keys], "s-", label="std")
        ax.set_xticks(range(len(keys)), [k.replace("resid_1", "attn").replace(".out", ".mlp") for k in keys],
                      rotation=60, fontsize=7)
        ax.set_yscale("log"), ax.legend(), ax.grid(alpha=0.3)
        ax.set_title(f"the residual stream after each attention / MLP step\n{description}", fontsize=8)
        save(fig, path)

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
    return 0


if __name__ == "__main__":
    run(main)
