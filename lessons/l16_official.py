"""Lesson 16: reproduce published GPT-2 outputs with the real weights.

Everything before this was checked on random-weight fixtures made by transformers. The final
test of the whole pipeline (tokenizer, loading, every op, the cache, greedy decoding) is to
reproduce what other implementations published with OpenAI's weights:

- picoGPT's README (jaymody/picoGPT): gpt2 (124M), greedy, 40 new tokens after
  "Alan Turing theorized that computers would one day become";
- tinygrad's GPT-2 example (tinygrad/examples/gpt2.py, its greedy self-test): gpt2-medium,
  10 new tokens after "Hello." and after "What is the answer to life, the universe, and everything?".

The weights are not downloaded here: fetch them once with `python download_weights.py gpt2`
(and gpt2-medium). Without them this lesson says SKIPPED and exits 0; it never fakes a pass.

The bundled demo model gets the same treatment first: its model card holds a greedy sample that
the training script made with transformers; the lessons' own greedy loop (lesson 09) must
reproduce it token for token.

    python -m lessons.l16_official [--fast]
"""

import json
import re
from pathlib import Path

import numpy as np

from lessons._common import check_equal, check_true, parse_args, run, skipped, title
from lessons.l09_kv_cache import greedy_generate
from lessons.l08_forward import model_weights

PUBLISHED = [
    # (model, prompt, new tokens, the published output after the prompt, source)
    ("gpt2", "Alan Turing theorized that computers would one day become", 40,
     " the most powerful machines on the planet.\n\nThe computer is a machine that can perform complex "
     "calculations, and it can perform these calculations in a way that is very similar to the human brain.\n",
     "picoGPT README (jaymody/picoGPT)"),
    ("gpt2-medium", "Hello.", 10, " I'm a little late to the party, but",
     "tinygrad examples/gpt2.py greedy test"),
    ("gpt2-medium", "What is the answer to life, the universe, and everything?", 10,
     "\n\nThe answer is that we are all one", "tinygrad examples/gpt2.py greedy test"),
]


def local_folder(name):
    from minigpt2.weights.hub import resolve_model_folder
    try:
        return Path(resolve_model_folder(name, local_files_only=True))
    except (OSError, ValueError):
        return None


def demo_model_card_sample(args):
    """Reproduce the bundled model's card sample (made by transformers) with the lessons' pieces."""
    from minigpt2.model import GPT2LMHeadModel
    from minigpt2.tokenizer import GPT2Tokenizer

    title("the bundled demo model tiny-shakespeare: its model card's greedy sample")
    folder = local_folder("tiny-shakespeare")
    card = None if folder is None else (folder / "README.md")
    match = card and card.exists() and re.search(r"<!-- sample: greedy (.*?) -->\n```text\n(.*?)\n```",
                                                  card.read_text(encoding="utf-8"), re.S)
    if not match:
        skipped("the bundled demo model (or its model card's greedy sample) is not there")
        return
    settings, expected = json.loads(match.group(1)), match.group(2)
    model, tok = GPT2LMHeadModel.from_pretrained(folder, backend="numpy"), GPT2Tokenizer.from_pretrained(folder)
    n = 20 if args.fast else settings["max_new_tokens"]
    ids = greedy_generate(np.array([tok.encode(settings["prompt"])]), model_weights(model), model.config, n)
    text = tok.decode(ids[0])
    print(f"{text}\n---")
    if n == settings["max_new_tokens"]:
        check_equal("greedy text == the model card's (made with transformers)", text, expected)
    else:
        check_true(f"the first {n} greedy tokens start the model card's text", expected.startswith(text), repr(text))


def main(argv=None):
    args = parse_args(__doc__, argv)
    from minigpt2.model import GPT2LMHeadModel
    from minigpt2.tokenizer import GPT2Tokenizer

    demo_model_card_sample(args)
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    ran = 0
    for name, prompt, n_new, expected, source in PUBLISHED:
        title(f"{name}: {prompt!r} ({source})")
        folder = local_folder(name)
        if folder is None:
            skipped(f"the real {name} weights are not in a local cache: nothing to compare. Fetch them "
                    f"with `python download_weights.py {name}` where there is network, then rerun.")
            print(f"the published result (greedy, {n_new} new tokens in [brackets]), which this lesson reproduces "
                  f"with the weights:\n  " + f"{prompt}[{expected}]".replace("\n", "\n  "))
            continue
        n = min(n_new, 10) if args.fast else n_new
        model = GPT2LMHeadModel.from_pretrained(folder, backend="numba")
        ids = np.array([tok.encode(prompt)])
        library = model.generate(ids, max_new_tokens=n, do_sample=False)
        text = tok.decode(library[0, ids.shape[1]:])
        print(f"minigpt2 greedy, {n} tokens: {text!r}")
        print(f"published ({n_new} tokens):  {expected!r}")
        if n == n_new:
            check_equal(f"{name} greedy continuation == {source}", text, expected)
        else:
            check_true(f"{name}: the first {n} greedy tokens start the published continuation",
                       expected.startswith(text), f"{text!r}")
        if name == "gpt2":   # lesson 08/09/11's own pieces, float32 NumPy, same tokens
            ours = greedy_generate(ids, model_weights(model), model.config, min(n, 12))
            check_equal(f"{name}: the lessons' own greedy loop (l09 cache) == minigpt2 generate",
                        ours[0].tolist(), library[0, :ours.shape[1]].tolist())
        ran += 1
    title("summary")
    if ran == 0:
        print("SKIPPED: no official weights found offline, so no published output was checked (the texts\n"
              "above are what the real weights give, as published; the demo model's sample was checked).")
    else:
        print(f"{ran} of {len(PUBLISHED)} published outputs reproduced.")
    return 0


if __name__ == "__main__":
    run(main)
