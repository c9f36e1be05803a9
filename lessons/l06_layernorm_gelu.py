"""Lesson 06: layer norm and GELU, the two elementwise pieces of a block.

Layer norm rescales each vector to mean 0 and variance 1, then applies a learned scale and shift:

    y = (x - mean) / sqrt(var + eps) * weight + bias        eps = 1e-5 *inside* the sqrt,
                                                           var = the *biased* variance (divide by n)

GELU is the MLP's nonlinearity. GPT-2 was trained with the tanh approximation ("gelu_new"):

    gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

not the exact x * Phi(x) with the error function (torch's default nn.GELU, which nanoGPT uses).
They differ by at most ~5e-4, small but not zero: with the erf form the logits of a real model
drift from the official ones, so reproducing GPT-2 exactly needs the tanh form. The check below
fails if `GELU` is swapped for the erf form (tests/test_lessons.py does exactly that).

    python -m lessons.l06_layernorm_gelu [--fast] [--figures DIR]
"""

import math

import numpy as np

from lessons._common import (check, figure_path, fixture_weights, parse_args, pyplot, reference_npz,
                             run, save, title)


def layer_norm(x, weight, bias, eps=1e-5):
    """[..., c] -> [..., c]. The first piece this lesson teaches."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)             # biased: divide by c
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_new(x):
    """GPT-2's GELU, the tanh form. The second piece this lesson teaches."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf(x):
    """The exact GELU, x * Phi(x) (for comparison only: not what GPT-2 uses)."""
    erf = np.vectorize(math.erf)
    return (0.5 * x * (1 + erf(x.astype(np.float64) / math.sqrt(2)))).astype(x.dtype)


GELU = gelu_new        # the activation the checks test; a test swaps in gelu_erf to see them fail


def main(argv=None):
    args = parse_args(__doc__, argv)
    ref = reference_npz("numerics.npz")                             # made by torch (make_references.py)

    title("layer norm on one vector")
    x = ref["ln_x"][0, 0]
    y = layer_norm(x, 1.0, 0.0)
    print(f"x: mean {x.mean():+.3f}  std {x.std():.3f}  ->  y: mean {y.mean():+.1e}  std {y.std():.4f}")
    unbiased = (x - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-5)
    eps_outside = (x - x.mean()) / (np.sqrt(x.var()) + 1e-5)
    print(f"unbiased variance (torch.var's default) instead: max diff {np.abs(unbiased - y).max():.2e}"
          f"  (c = {x.size}: a factor sqrt(c/(c-1)))")
    print(f"eps outside the sqrt instead:                   max diff {np.abs(eps_outside - y).max():.2e}")

    title("GELU: tanh (gelu_new) vs erf")
    grid = ref["x_grid"]
    diff = GELU(grid) - gelu_erf(grid)
    worst = np.abs(diff).argmax()
    print(f"max |GELU - gelu_erf| on [-6, 6] = {np.abs(diff).max():.2e} at x = {grid[worst]:.2f}")
    for v in (-3.0, -1.0, 0.0, 0.5, 1.0, 3.0):
        a = np.float32(v)
        print(f"  x = {v:+.1f}:  tanh form {gelu_new(a):+.6f}   erf form {gelu_erf(np.array([a]))[0]:+.6f}")
    config, weights, _ = fixture_weights("tiny")
    from minigpt2.config import GPT2Config
    from minigpt2.model import GPT2LMHeadModel
    erf_config = GPT2Config(**{**config.to_dict(), "activation_function": "gelu"})
    ids = np.arange(12)[None] % config.vocab_size
    a = GPT2LMHeadModel(config, weights, backend="numpy")(ids).logits
    b = GPT2LMHeadModel(erf_config, weights, backend="numpy")(ids).logits
    print(f"the same 2-layer model with erf GELU: logits move by up to {np.abs(a - b).max():.2e} "
          f"(of max |logit| {np.abs(a).max():.1f})")

    path = figure_path(args, "l06_gelu.png")
    if path:
        plt = pyplot()
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
        top.plot(grid, gelu_new(grid), label="gelu_new (tanh) - GPT-2")
        top.plot(grid, gelu_erf(grid), "--", label="gelu (erf)")
        top.plot(grid, np.maximum(grid, 0), ":", color="gray", label="relu")
        top.legend(), top.set_ylabel("activation"), top.grid(alpha=0.3)
        bottom.plot(grid, gelu_new(grid) - gelu_erf(grid))
        bottom.set_ylabel("tanh - erf"), bottom.set_xlabel("x"), bottom.grid(alpha=0.3)
        fig.suptitle("GELU: the tanh approximation GPT-2 was trained with vs the exact erf form")
        save(fig, path)

    title("checks")
    check("layer_norm == torch.nn.functional.layer_norm (eps 1e-5)",
          layer_norm(ref["ln_x"], ref["ln_weight"], ref["ln_bias"]), ref["ln_out"], tol=1e-5)
    check("GELU == torch gelu(approximate='tanh')", GELU(grid), ref["gelu_tanh"], tol=1e-6)
    from minigpt2 import ops
    check("layer_norm == minigpt2.ops.layer_norm", layer_norm(ref["ln_x"], ref["ln_weight"], ref["ln_bias"]),
          ops.layer_norm(ref["ln_x"], ref["ln_weight"], ref["ln_bias"]), tol=1e-6)
    check("GELU == minigpt2.ops.gelu_new", GELU(grid), ops.gelu_new(grid), tol=1e-6)
    # In the model: the final layer norm of the last block's output == transformers' last hidden state
    config, weights, fixture_ref = fixture_weights("tiny")
    from minigpt2.model import GPT2Model
    trace = {}
    GPT2Model(config, weights, backend="numpy")(fixture_ref["input_ids"], trace=trace)
    last = trace[f"h.{config.n_layer - 1}.out"]
    check("layer_norm(last block output, ln_f) == transformers' hidden_states[-1]",
          layer_norm(last, weights["ln_f.weight"], weights["ln_f.bias"]), fixture_ref["hidden_states"][-1],
          tol=1e-4)
    return 0


if __name__ == "__main__":
    run(main)
