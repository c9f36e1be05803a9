"""Lesson 18: beam search: keep the k best continuations, not just the best token.

Greedy decoding (lesson 11) takes the most likely token at every step, and can miss a sequence
whose first token is less likely but whose whole is more likely. Beam search keeps k running
sequences ("beams"); every step each beam proposes every token, a candidate's score is its
beam's sum of log-probabilities plus log p(token), and the best ones survive. The beams form a
tree: each step's beams hang from last step's (the figure).

transformers' rules, which this lesson rebuilds for one prompt:
- keep the 2k best candidates (so k beams go on even when the best ones end);
- a candidate that ends (EOS, or the last allowed token) and ranks among the first k becomes a
  finished hypothesis with score  sum log p / (new tokens) ** length_penalty  (length_penalty > 0
  favours longer ones: the sum of log p only ever falls);
- the k best finished hypotheses are kept; the search stops when the best running beam, at its
  current length, cannot beat the worst of k finished ones (early_stopping=False).

Beam search maximises likelihood, and likely text repeats itself: a loop, once begun, is the
most likely continuation. no_repeat_ngram_size=n bans every token that would repeat an n-gram.

    python -m lessons.l18_beam_search [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons._common import (check, check_equal, check_true, figure_path, load_model, parse_args, pyplot, run,
                             save, title, visible)
from lessons._common import REPO_ROOT


def log_softmax(scores):
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def beam_search(model, prompt, k, max_new_tokens, eos, length_penalty=1.0):
    """-> (finished [(score, tokens)] best first, tree [[(parent, token, score)] per step])."""
    beams = [(0.0, list(prompt))]                       # (sum of log p, tokens); one beam at first
    finished, tree = [], []
    for step in range(max_new_tokens):
        logits = model(np.array([tokens for _, tokens in beams])).logits[:, -1]       # [beams, vocab]
        scores = np.array([s for s, _ in beams])[:, None] + log_softmax(logits.astype(np.float64))
        best = np.argsort(-scores, axis=None, kind="stable")[: 2 * k]                 # over all beams
        going_on = []
        for rank, flat in enumerate(best):
            parent, token = divmod(int(flat), scores.shape[1])
            score, tokens = scores[parent, token], beams[parent][1] + [token]
            if token == eos or step == max_new_tokens - 1:                            # it ends here
                if rank < k:
                    finished.append((score / (step + 1) ** length_penalty, tokens))
            elif len(going_on) < k:
                going_on.append((score, tokens, parent))
        finished = sorted(finished, key=lambda f: -f[0])[:k]
        tree.append([(parent, tokens[-1], score) for score, tokens, parent in going_on])
        beams = [(score, tokens) for score, tokens, _ in going_on]
        # stop when the best running beam cannot beat the worst of k finished hypotheses
        if not beams or (len(finished) == k and beams[0][0] / (step + 1) ** length_penalty <= finished[-1][0]):
            break
    return finished, tree


def repeated_ngrams(tokens, n):
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


def draw_tree(args, tree, tok, description):
    path = figure_path(args, "l18_beam_tree.png")
    if not path:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    for step, beams in enumerate(tree):
        for row, (parent, token, score) in enumerate(beams):
            if step:
                ax.plot([step - 1, step], [parent, row], color="#999999", lw=0.8)
            ax.annotate(visible(tok.decode([token])), (step, row), fontsize=7, ha="center", va="bottom")
            ax.scatter([step], [row], s=12, color="#4c72b0")
    ax.set_xlabel("step (new token)")
    ax.set_ylabel("beam (0 = best)")
    ax.set_yticks(range(max(len(beams) for beams in tree)))
    ax.invert_yaxis()
    ax.set_title(f"the beam tree: each step's beams and the beam they grew from\n{description}", fontsize=8)
    save(fig, path)


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("beams on the chosen model: greedy, beams, beams with n-gram blocking")
    model, tok, description = load_model(args)
    prompt = tok.encode("The king said that")
    n_new = 12 if args.fast else 30
    texts = {}
    for name, kwargs in (("greedy", {}), ("4 beams", dict(num_beams=4)),
                         ("4 beams, no_repeat_ngram_size 2", dict(num_beams=4, no_repeat_ngram_size=2))):
        ids = model.generate([prompt], max_new_tokens=n_new, eos_token_id=None, **kwargs)[0, len(prompt):].tolist()
        texts[name] = ids
        print(f"  {name:32s} repeated 2-grams {repeated_ngrams(ids, 2):2d}: {tok.decode(ids)!r}")
    finished, tree = beam_search(model, prompt, 4, n_new, eos=None)
    draw_tree(args, tree, tok, description)
    for score, tokens in finished:
        print(f"  score {score:8.4f} (sum log p / length): {tok.decode(tokens[len(prompt):])!r}")

    title("checks: this beam search == transformers' generate(num_beams=...) (tests/fixtures/generation)")
    from minigpt2 import GPT2LMHeadModel
    folder = REPO_ROOT / "tests" / "fixtures" / "generation"
    ref = dict(np.load(folder / "reference.npz"))
    fixture_model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    prompt_ids = ref["prompt"].tolist()
    # the fixture's cases 0 and 1 (make_generation_fixtures.py): 4 beams, 18 new tokens
    for case, (eos, length_penalty, n_return) in enumerate(((95, 1.0, 1), (57, 0.5, 4))):
        finished_here, _ = beam_search(fixture_model, prompt_ids, 4, 18, eos, length_penalty)
        width = ref[f"beam_{case}_sequences"].shape[1]
        ours = [tokens + [95] * (width - len(tokens)) for _, tokens in finished_here[:n_return]]   # pad id 95
        check_equal(f"case {case}: sequences == transformers' (eos {eos}, length_penalty {length_penalty})",
                    ours, ref[f"beam_{case}_sequences"].tolist())
        check(f"case {case}: scores == transformers' sequences_scores", [s for s, _ in finished_here[:n_return]],
              ref[f"beam_{case}_scores"], tol=1e-4)
    ids = texts["4 beams"]
    check_equal("the lesson's beams == minigpt2 generate(num_beams=4) on the chosen model",
                finished[0][1][len(prompt):], ids)
    check_true("no_repeat_ngram_size 2: no 2-gram twice", repeated_ngrams(texts["4 beams, no_repeat_ngram_size 2"], 2) == 0)
    return 0


if __name__ == "__main__":
    run(main)
