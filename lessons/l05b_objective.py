"""Lesson 05b: the objective: every position predicts the next token.

Before looking inside the model (lessons 06-08), what is it for? Treat it as a black box:

    logits = model(input_ids)                   [b, t] ids -> [b, t, vocab] scores

logits[:, i] is a score for every vocabulary entry as the token at position i + 1, given the
tokens 0..i. Training asks exactly that, at every position at once: the targets are the inputs
shifted by one, and the loss is the mean over positions of -log softmax(logits[:, i])[ids[i + 1]]
(cross-entropy, in nats). One text of t tokens is t - 1 training examples.

Two consequences the later lessons rely on:
- a model that knows nothing scores every token alike: loss = ln(vocab) = ln(50257) = 10.82 for
  GPT-2. Any trained model must do better; perplexity exp(loss) reads "as unsure as a uniform
  choice among this many tokens";
- position i must not see token i + 1, or it could copy its own answer (loss 0, nothing learned).
  So the output at position i may depend only on tokens 0..i: the causal mask of lesson 07 is
  this rule written as a matrix, and the last check below tests it on a real model.

Lesson 13 deepens the loss (-100 labels for padding, sliding windows for long texts).
Longer notes: lessons/l05b_objective.md.

    python -m lessons.l05b_objective [--fast] [--model ...]
"""

import math

import numpy as np

from lessons._common import REPO_ROOT, check, check_true, fixture, load_model, parse_args, run, title


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def next_token_loss(logits, input_ids):
    """Mean -log p(ids[i + 1] | ids[:i + 1]). The piece this lesson teaches.

    logits [b, t, v], input_ids [b, t] -> a scalar: position i is scored against token i + 1."""
    predictions, targets = logits[:, :-1], input_ids[:, 1:]            # [b, t-1, v], [b, t-1]
    logp = log_softmax(predictions.astype(np.float64))
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("inputs and targets: the same ids, shifted by one")
    _, ref = fixture("tiny")                  # logits made by transformers on random weights
    ids, logits = ref["input_ids"], ref["logits"]
    print(f"input_ids {ids.shape} -> logits {logits.shape}: one row of {logits.shape[-1]} scores per position")
    for i in range(4):
        print(f"  position {i}: sees {ids[0, :i + 1].tolist()!s:22s} -> its logits are scored on token "
              f"{ids[0, i + 1]}  (p = {np.exp(log_softmax(logits[0, i]))[ids[0, i + 1]]:.1e})")
    print(f"what you should see: each position's target is the next position's input. These weights are\n"
          f"random at O(1) scale, so p is far below a blind guess (1/512 = 2.0e-03): confidently wrong,\n"
          f"and transformers' loss {float(ref['loss']):.2f} is above ln(512) = {math.log(512):.2f}")

    title("the loss, and what 'knowing nothing' scores")
    vocab = 50257
    uniform = next_token_loss(np.zeros((1, 8, vocab)), np.arange(8)[None])      # every score equal
    print(f"all-equal logits over {vocab} tokens: loss {uniform:.4f} = ln({vocab}) = {math.log(vocab):.4f}, "
          f"perplexity {np.exp(uniform):.0f}")
    cheat = np.full((1, 8, vocab), -30.0)
    cheat[0, np.arange(7), np.arange(1, 8)] = 30.0        # a 'model' that sees the answer: logits[i] -> ids[i + 1]
    print(f"a model allowed to see token i + 1 copies it: loss {abs(next_token_loss(cheat, np.arange(8)[None])):.1e}")
    print("what you should see: 10.82 is the bar every real model must beat; the near-zero loss of the\n"
          "copier is why lesson 07 hides the future (it would learn to copy, not to predict)")

    title("the chosen model on Shakespeare")
    model, tok, description = load_model(args)
    text = (REPO_ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[-2000:]
    n = min(48 if args.fast else 200, model.config.n_positions)
    text_ids = np.array([tok.encode(text)[:n]])
    model_logits = model(text_ids).logits                               # [1, n, vocab]
    loss = next_token_loss(model_logits, text_ids)
    baseline = math.log(model.config.vocab_size)
    print(f"{description}, {n} tokens: loss {loss:.3f} nats/token (uniform: {baseline:.3f}), "
          f"perplexity {np.exp(loss):.1f} (uniform: {model.config.vocab_size})")
    print("what you should see: a trained model (the demo model or gpt2) far below the uniform line;\n"
          "random weights land near or above it (confidently wrong)")

    title("checks")
    labels = ref["labels"]                   # transformers' loss skips targets labelled -100 (lesson 13)
    keep = labels[:, 1:] != -100
    logp = log_softmax(logits[:, :-1].astype(np.float64))
    ours = -np.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0][keep].mean()
    check("loss of transformers' logits, scored pairs only == transformers' loss (fixture tiny)", ours,
          ref["loss"], tol=1e-5, relative=True)
    from minigpt2.model import GPT2LMHeadModel
    generation = np.load(REPO_ROOT / "tests" / "fixtures" / "generation" / "reference.npz")
    small = GPT2LMHeadModel.from_pretrained(REPO_ROOT / "tests" / "fixtures" / "generation", backend="numpy")
    text_fixture = generation["text"][None]                             # [1, 101], labels = input_ids
    check("next_token_loss(model(ids), ids) == transformers' loss(labels=ids) (generation fixture)",
          next_token_loss(small(text_fixture).logits, text_fixture), generation["text_loss"], tol=1e-5,
          relative=True)
    check("all-equal logits: loss == ln(50257) (hand computation)", uniform, math.log(50257), tol=1e-9)
    if "RANDOM" not in description:
        check_true("the chosen model beats the uniform baseline", loss < baseline,
                   f"{loss:.3f} < ln({model.config.vocab_size}) = {baseline:.3f}")
    changed = text_ids.copy()
    changed[0, -1] = (changed[0, -1] + 1) % model.config.vocab_size    # a different last token
    check("the objective's rule: changing the last token changes no earlier position's logits",
          model(changed).logits[:, :-1], model_logits[:, :-1], tol=0)
    return 0


if __name__ == "__main__":
    run(main)
