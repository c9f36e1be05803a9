"""Lesson 13: scoring text: the loss, shifted labels, -100, and perplexity.

Lesson 05b introduced the objective; this lesson scores real text with it. Position i's logits
predict token i + 1. So the language-modelling loss pairs logits[:, :-1] with labels[:, 1:]
(transformers shifts inside the model: pass labels = input_ids), takes
-log softmax(logits)[label] for each pair, skips labels equal to -100 (padding, prompt tokens
you do not want to score), and averages. Perplexity = exp(mean loss): "as unsure as a uniform
choice among this many tokens". A uniform guess over GPT-2's vocabulary scores ln(50257) = 10.82.

A text longer than the context is scored with a sliding window (transformers' perplexity guide):
windows of max_length tokens start every `stride` tokens, and each scores only the tokens the
previous window did not reach, so every token is scored once, with max_length - stride tokens of
context or more.

    python -m lessons.l13_scoring [--fast] [--model ...]
"""

import numpy as np

from lessons._common import REPO_ROOT, check, fixture_weights, load_model, parse_args, run, title
from lessons.l08_forward import forward, model_weights


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def lm_loss(logits, labels, ignore_index=-100):
    """Mean -log p(label) with labels shifted by one. The piece this lesson teaches."""
    logits, labels = logits[:, :-1], labels[:, 1:]                     # position i predicts token i + 1
    keep = labels != ignore_index                                      # [b, t - 1]
    logp = log_softmax(logits[keep].astype(np.float64))                # [n, vocab]
    return -logp[np.arange(len(logp)), labels[keep]].mean()


def sliding_window_logprobs(model, ids, max_length, stride):
    """[n] ids -> [n - 1] log p(token i | up to max_length - 1 tokens before it), i = 1..n-1."""
    out, done = [], 1                                                  # position 0 is never scored
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        first = max(done, begin + 1)                                   # new tokens with context here
        logp = log_softmax(model(ids[None, begin:end]).logits[0].astype(np.float64))   # [w, vocab]
        out.append(logp[np.arange(first - 1, end - 1) - begin, ids[first:end]])
        done = end
        if end == len(ids):
            break
    return np.concatenate(out)


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("the chosen model on a few lines of Shakespeare")
    model, tok, description = load_model(args)
    text = (REPO_ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[-2000:]
    ids = np.array([tok.encode(text)[: min(48 if args.fast else 256, model.config.n_positions)]])
    _, logits = forward(ids, model_weights(model), model.config)
    loss = lm_loss(logits, ids)
    surprise = -log_softmax(logits[0, :-1].astype(np.float64))[np.arange(ids.shape[1] - 1), ids[0, 1:]]
    print(f"{ids.shape[1]} tokens: loss {loss:.3f} nats/token, perplexity {np.exp(loss):.1f} "
          f"(uniform guessing: {np.log(model.config.vocab_size):.2f}, {model.config.vocab_size})")
    if loss > np.log(model.config.vocab_size):
        print("  (worse than uniform: random weights are confidently wrong)")
    worst = np.argsort(-surprise)[:3]
    best = np.argsort(surprise)[:3]
    for name, picks in (("most surprising", worst), ("least surprising", best)):
        print(f"  {name}: " + ", ".join(f"{tok.decode([int(ids[0, i + 1])])!r} ({surprise[i]:.2f})" for i in picks))
    from minigpt2.scoring import score
    library = score(model, ids[0])
    print(f"minigpt2.scoring.score: perplexity {library.perplexity:.1f}")

    title("a sliding window")
    max_length, stride = (32, 16) if args.fast else (128, 64)
    windowed = sliding_window_logprobs(model, ids[0], max_length, stride)
    print(f"windows of {max_length} tokens every {stride}: perplexity {np.exp(-windowed.mean()):.1f} "
          f"(one pass over all {ids.shape[1]}: {np.exp(loss):.1f})")

    title("checks")
    config, weights, ref = fixture_weights("tiny")
    _, fixture_logits = forward(ref["input_ids"], weights, config)
    print(f"fixture labels (-100 = not scored):\n{ref['labels']}")
    ours = lm_loss(fixture_logits, ref["labels"])
    check("loss with -100 labels == transformers' loss (fixture tiny)", ours, ref["loss"], tol=1e-5, relative=True)
    from minigpt2.model import GPT2LMHeadModel
    check("loss == minigpt2 GPT2LMHeadModel(labels=...).loss", ours,
          GPT2LMHeadModel(config, weights, backend="numpy")(ref["input_ids"], labels=ref["labels"]).loss,
          tol=1e-5, relative=True)
    check("chosen model: perplexity == minigpt2.scoring.score", np.exp(loss), library.perplexity,
          tol=1e-4, relative=True)
    check("sliding window log-probs == minigpt2.scoring.score(stride, max_length)", windowed,
          score(model, ids[0], stride=stride, max_length=max_length).logprobs, tol=1e-4, relative=True)
    whole = sliding_window_logprobs(model, ids[0], ids.shape[1], stride)
    check("one window over the whole text == the plain loss", -whole.mean(), loss, tol=1e-6, relative=True)
    return 0


if __name__ == "__main__":
    run(main)
