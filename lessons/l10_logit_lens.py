"""Lesson 10: the logit lens, reading the residual stream before the last layer.

Every block adds to one residual stream x [b, t, c]; the LM head reads it at the end with
logits = ln_f(x) @ wte.T. Nothing stops us from applying that same head to the stream after
block 0, 1, 2, ...: the "logit lens" (nostalgebraist, 2020). Read the output, not a story:
- the embeddings row often echoes the input token: the head is wte itself (tying, lesson 08), and
  wte[id] . wte[id] is large, so a stream that is still just the token's embedding scores itself;
- in real gpt2 the guesses tend to settle on the final answer over the later blocks. In the small
  demo model they do not sharpen steadily: an early block can be *more* confident than the output
  (the lens reads a stream the head was only trained on after the last block), and the final
  layer's lower confidence is the calibrated one, the one the loss was trained on;
- for random weights nothing in the rows means anything.

One trap: transformers' hidden_states[-1] is already *after* ln_f (the others are block inputs
without it), so the lens must not normalise that one twice. The check makes sure the lens at the
last block equals the model's logits.

    python -m lessons.l10_logit_lens [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons._common import (check, figure_path, fixture_weights, load_model, parse_args, pyplot, run,
                             save, title, visible)
from lessons.l06_layernorm_gelu import layer_norm


def logit_lens(stream, ln_f_weight, ln_f_bias, wte, eps=1e-5):
    """[.., c] residual stream (no ln_f yet) -> [.., v] logits. The piece this lesson teaches."""
    return layer_norm(stream, ln_f_weight, ln_f_bias, eps) @ wte.T


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def streams(model, ids):
    """The residual stream after the embeddings and after every block: [n_layer + 1] x [b, t, c]."""
    out = model(ids, output_hidden_states=True)
    trace = {}
    model(ids, trace=trace)
    return list(out.hidden_states[:-1]) + [trace[f"h.{model.config.n_layer - 1}.out"]], out.logits


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("the chosen model, layer by layer")
    model, tok, description = load_model(args)
    prompt = "The Eiffel Tower is in the city of" if not args.fast else "The Eiffel Tower is in"
    ids = np.array([tok.encode(prompt)])
    labels = [visible(tok.decode([i])) for i in ids[0]]
    body = model.transformer
    layers, logits = streams(model, ids)
    lens = [logit_lens(x, body.ln_f.weight, body.ln_f.bias, model.lm_head.weight, model.config.layer_norm_epsilon)
            for x in layers]
    for i, z in enumerate(lens):
        p = softmax(z[0, -1])
        best = int(p.argmax())
        name = "embeddings" if i == 0 else f"after block {i - 1}"
        print(f"  {name:16s} next after {labels[-1]!r}: {tok.decode([best])!r:14s} p = {p[best]:.3f}")
    echo = float(np.mean(lens[0][0].argmax(-1) == ids[0]))
    print(f"the embeddings row guesses the input token itself at {echo:.0%} of positions (the tied-head echo)")
    print("what you should see: an echo in the first row; then the guess changes block by block, and only the last\n"
          "row is the model's prediction. Confidence need not rise monotonically (see the docstring)")

    path = figure_path(args, "l10_logit_lens.png")
    if path:
        plt = pyplot()
        top_p = np.array([softmax(z[0]).max(-1) for z in lens])              # [layers, t]
        top_id = np.array([z[0].argmax(-1) for z in lens])
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 0.8 + 0.45 * len(lens)))
        ax.imshow(top_p, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (r, c), token in np.ndenumerate(top_id):
            ax.text(c, r, visible(tok.decode([int(token)]))[:8], ha="center", va="center", fontsize=7,
                    color="white" if top_p[r, c] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
        ax.set_yticks(range(len(lens)), ["embed"] + [f"block {i}" for i in range(len(lens) - 1)], fontsize=8)
        ax.set_xlabel("input position (the cell is the guess for the NEXT token)")
        ax.set_title(f"logit lens: top guess per layer, shade = its probability\n{description}", fontsize=8)
        save(fig, path)

    title("checks")
    check("lens after the last block == the model's logits (chosen model)", lens[-1], logits, tol=1e-4,
          relative=True)
    config, weights, ref = fixture_weights("tiny")
    from minigpt2.model import GPT2LMHeadModel
    fixture_model = GPT2LMHeadModel(config, weights, backend="numpy")
    layers_f, _ = streams(fixture_model, ref["input_ids"])
    lens_f = logit_lens(layers_f[-1], weights["ln_f.weight"], weights["ln_f.bias"], weights["wte.weight"])
    check("lens after the last block == transformers' logits (fixture tiny)", lens_f, ref["logits"], tol=1e-5,
          relative=True)
    check("embeddings lens == ln_f(transformers' hidden_states[0]) @ wte.T (fixture tiny)",
          logit_lens(layers_f[0], weights["ln_f.weight"], weights["ln_f.bias"], weights["wte.weight"]),
          logit_lens(ref["hidden_states"][0], weights["ln_f.weight"], weights["ln_f.bias"], weights["wte.weight"]),
          tol=1e-6, relative=True)
    return 0


if __name__ == "__main__":
    run(main)
