"""Lesson 11: from logits to the next token: greedy, temperature, top-k, top-p.

The model gives one score per vocab entry for the next token. Turning that into a choice:

- greedy: the highest score (deterministic; it tends to loop: once a token makes itself likely
  again, argmax picks it forever; the greedy check below shows 138, 138, 138, 355, 355, ...);
- temperature T: divide the scores by T before the softmax; T < 1 sharpens, T > 1 flattens;
- top-k: keep the k highest scores (transformers keeps *every* token tied with the k-th);
- top-p (nucleus): keep the smallest set of most likely tokens whose probability reaches p
  (the token that crosses p stays; OpenAI's gpt-2 sampler drops it);
- then sample from the softmax of what is left (removed tokens get score -inf -> probability 0).

transformers applies them in that order (temperature, top-k, top-p). The checks compare each
filter with transformers' own LogitsWarpers on fixed logits, greedy decoding with transformers'
`generate`, and our sampler's frequencies with the probabilities it samples from.

    python -m lessons.l11_sampling [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons._common import (check, check_equal, figure_path, fixture_weights, load_model, parse_args,
                             pyplot, reference_npz, run, save, title, visible)
from lessons.l09_kv_cache import greedy_generate


def temperature(scores, t):
    return scores / t


def top_k(scores, k):
    kth = np.sort(scores, axis=-1)[:, -k][:, None]                     # the k-th highest per row
    return np.where(scores < kth, -np.inf, scores)                     # ties with the k-th stay


def top_p(scores, p):
    order = np.argsort(-scores, axis=-1, kind="stable")                # most likely first
    probs = np.take_along_axis(softmax(scores), order, axis=-1)
    mass_above = np.cumsum(probs, axis=-1) - probs                     # probability ranked above
    keep_sorted = mass_above < p                                       # the first token always stays
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, scores, -np.inf)


def softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sample(scores, rng):
    """One token per row: invert the cumulative distribution at a uniform draw."""
    cdf = np.cumsum(softmax(scores.astype(np.float64)), axis=-1)
    u = rng.random((scores.shape[0], 1))
    return np.minimum((cdf <= u * cdf[:, -1:]).sum(axis=-1), scores.shape[-1] - 1)


def check_filtered(name, ours, reference):
    """Same tokens removed (-inf), same scores for the ones kept."""
    kept = lambda scores: [np.flatnonzero(np.isfinite(row)).tolist() for row in scores]   # noqa: E731
    check_equal(f"{name}: same tokens kept", kept(ours), kept(reference))
    check(f"{name}: same kept scores", np.where(np.isinf(ours), 0, ours), np.where(np.isinf(reference), 0, reference),
          tol=1e-5)


def main(argv=None):
    args = parse_args(__doc__, argv)
    ref = reference_npz("sampling.npz")

    title("the chosen model's next-token distribution, filtered")
    model, tok, description = load_model(args)
    prompt = "Once upon a time, there was a"
    scores = model(np.array([tok.encode(prompt)])).logits[:, -1].astype(np.float64)   # [1, vocab]
    variants = {"T = 1": scores, "T = 0.7": temperature(scores, 0.7), "top-k 10": top_k(scores, 10),
                "top-p 0.9": top_p(scores, 0.9)}
    for name, s in variants.items():
        p = softmax(s)[0]
        best = np.argsort(-p)[:4]
        print(f"  {name:10s} {int(np.isfinite(s).sum()):6d} tokens left; top: "
              + ", ".join(f"{tok.decode([int(i)])!r} {p[i]:.3f}" for i in best))
    rng = np.random.default_rng(0)
    picks = [int(sample(top_p(temperature(scores, 0.8), 0.95), rng)[0]) for _ in range(5)]
    print(f"five samples (T 0.8, top-p 0.95, seed 0): {[tok.decode([i]) for i in picks]}")
    print("what you should see: the same ranking in every row; T < 1 and the filters move probability to\n"
          "the top tokens. top-p 0.9 keeps thousands of tokens here: the demo model's distribution is flat")

    title("the trade-off, side by side: 16 new tokens each (seed 0)")
    prompt_ids = np.array([tok.encode(prompt)])
    settings = {"greedy": {}, "greedy, repetition_penalty 1.3": {"repetition_penalty": 1.3},
                "T 0.7, top-k 0": {"do_sample": True, "temperature": 0.7, "top_k": 0},
                "T 1.0, top-k 0 (pure sampling)": {"do_sample": True, "top_k": 0},
                "T 1.0, top-p 0.9": {"do_sample": True, "top_k": 0, "top_p": 0.9}}
    for name, kwargs in settings.items():
        new = model.generate(prompt_ids, max_new_tokens=16, seed=0, eos_token_id=tok.eos_token_id, **kwargs)
        print(f"  {name:31s} {tok.decode(new[0, prompt_ids.shape[1]:].tolist())!r}")
    print("what you should see: greedy repeats itself; the penalty lowers the scores of tokens already\n"
          "seen (a positive score / 1.3, a negative one x 1.3); pure sampling wanders; lower T or top-p\n"
          "trade variety for coherence. A row stops early only at <|endoftext|> (eos_token_id)")

    path = figure_path(args, "l11_sampling_filters.png")
    if path:
        plt = pyplot()
        shown = np.argsort(-softmax(scores)[0])[:25]
        fig, axes = plt.subplots(len(variants) + 1, 1, figsize=(9, 2.0 * (len(variants) + 1)))
        for ax, (name, s) in zip(axes, variants.items()):
            ax.bar(range(len(shown)), softmax(s)[0, shown], color="#4c72b0")
            ax.set_yscale("log"), ax.set_ylim(1e-3, 1), ax.set_xticks([])          # one scale for every panel
            ax.set_ylabel(f"{name}\n({int(np.isfinite(s).sum())} kept)", fontsize=8)
        axes[-2].set_xticks(range(len(shown)), [visible(tok.decode([int(i)])) for i in shown], rotation=70, fontsize=7)
        ranked = np.cumsum(np.sort(softmax(scores)[0])[::-1])
        axes[-1].plot(np.arange(1, len(ranked) + 1), ranked), axes[-1].set_xscale("log")
        axes[-1].axhline(0.9, color="gray", ls="--")
        axes[-1].axvline(np.searchsorted(ranked, 0.9) + 1, color="gray", ls="--")          # top-p 0.9's cut
        axes[-1].set_xlabel("tokens, most likely first (log scale)", fontsize=8)
        axes[-1].set_ylabel("cumulative\nprobability", fontsize=8)
        fig.suptitle(f"next-token probabilities after {prompt!r}: the 25 most likely (same log y-axis in every "
                     f"panel),\nand how many tokens it takes to reach p = 0.9; {description}", fontsize=8)
        fig.tight_layout()
        save(fig, path)

    title("checks against transformers' LogitsWarpers (lessons/references/sampling.npz)")
    logits = ref["logits"]
    for t in (0.5, 2.0):
        check(f"temperature {t}", temperature(logits, t), ref[f"temperature_{t}"], tol=1e-5)
    for k in (1, 2, 5):
        check_filtered(f"top_k {k}", top_k(logits, k), ref[f"top_k_{k}"])
    for p in (0.5, 0.9):
        check_filtered(f"top_p {p}", top_p(logits, p), ref[f"top_p_{p}"])
    from minigpt2 import processors as lib
    check_filtered("top_k 5 == minigpt2.processors.apply_top_k", top_k(logits, 5), lib.apply_top_k(logits, 5))
    check_filtered("top_p 0.9 == minigpt2.processors.apply_top_p", top_p(logits, 0.9), lib.apply_top_p(logits, 0.9))

    title("checks: greedy decoding and the sampler")
    config, weights, _ = fixture_weights("tiny")
    prompt_ids, hf_ids = ref["greedy_prompt"], ref["greedy_ids"]
    ours = greedy_generate(prompt_ids, weights, config, hf_ids.shape[1] - prompt_ids.shape[1])
    check_equal("greedy ids == transformers generate(do_sample=False) (fixture tiny)", ours, hf_ids)
    from minigpt2.model import GPT2LMHeadModel
    library = GPT2LMHeadModel(config, weights, backend="numpy").generate(
        prompt_ids, max_new_tokens=hf_ids.shape[1] - prompt_ids.shape[1], eos_token_id=None)
    check_equal("greedy ids == minigpt2 generate", ours, library)
    print("what you should see: greedy loops (138 four times, then 355 to the end): the fixture's random\n"
          "weights make one token its own most likely successor, and argmax never leaves it")
    n = 4000 if args.fast else 40000
    rows = np.repeat(top_k(logits[:1], 5), n, axis=0)                  # 5 candidates, n draws
    drawn = sample(rows, np.random.default_rng(1))
    frequency = np.bincount(drawn, minlength=logits.shape[1]) / n
    check(f"sampled frequencies ({n} draws) == softmax probabilities", frequency, softmax(rows[:1])[0],
          tol=5 / np.sqrt(n))
    return 0


if __name__ == "__main__":
    run(main)
