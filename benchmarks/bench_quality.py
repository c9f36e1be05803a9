"""What do bfloat16 / float16 / int8 weights cost in accuracy? One table per model.

For each storage type (float32 compute; see minigpt2/quantize.py), against float32 weights:

  * logit drift: max |logits - logits_fp32| / max |logits_fp32| over one full context window,
  * greedy agreement over 200 tokens: the float32 model generates 200 greedy tokens; the converted
    model, fed the same tokens (teacher forcing), picks the same top-1 token at what fraction of
    the 200 positions; plus how many tokens its own free-running greedy output keeps identical,
  * perplexity on tinyshakespeare (the last 10% of data/tinyshakespeare.txt, which the demo
    model's training run held out), sliding windows of n_positions with stride n_positions / 2.

Each storage type is measured with float32 products (matmul precision "highest", the default)
and, where the CPU has AMX (minigpt2.engine.amx), also with bfloat16 products in the prefill matmuls and
attention (set_float32_matmul_precision("medium")): the drift, the teacher-forced agreement and
the perplexity go through those kernels; the decode steps of the free-running greedy output do not
(one row per step stays float32).

A second table per model measures int8 weights with int8 activations (engine.set_int8_compute
("int8"), which only batch-1 decode steps use), against int8 with float32 activations, both through
decode steps (one token at a time through the KV cache, as generation runs): teacher-forced top-1
agreement with the float32 model's greedy tokens, and perplexity over windows of n_positions tokens.

Models: the bundled demo model (tiny-shakespeare, trained weights) and, with --gpt2, a random
GPT-2 124M of the real shapes (its random logits are nearly flat, so greedy agreement there is a
harsh test of tiny drifts, and its perplexity means nothing).

    python benchmarks/bench_quality.py [--tokens 8192] [--gpt2]
"""

import argparse
from pathlib import Path

import numpy as np

from minigpt2 import bench, engine
from minigpt2.engine import amx
from minigpt2.model import GPT2LMHeadModel
from minigpt2.quantize import convert_model, weight_bytes
from minigpt2.weights.packed import DTYPES
from minigpt2.scoring import perplexity
from minigpt2.tokenizer import GPT2Tokenizer

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "minigpt2" / "models" / "tiny-shakespeare"


def greedy(model, prompt, n_new):
    """Greedy continuation with the KV cache: returns the n_new ids."""
    out = model([prompt], use_cache=True, logits_to_keep=1)
    ids = []
    for _ in range(n_new):
        next_id = int(out.logits[0, -1].argmax())
        ids.append(next_id)
        out = model([[next_id]], past_key_values=out.past_key_values, use_cache=True)
    return ids


def decode_logits(model, ids):
    """[len(ids), vocab] logits of every position of ids, one batch-1 decode step per token."""
    out = model([list(ids[:1])], use_cache=True)
    logits = [out.logits[0, -1]]
    for token in ids[1:]:
        out = model([[int(token)]], past_key_values=out.past_key_values, use_cache=True)
        logits.append(out.logits[0, -1])
    return np.array(logits)


def decode_perplexity(model, text_ids):
    """Perplexity of text_ids in windows of n_positions tokens, each scored through decode steps."""
    window, nll, count = model.config.n_positions, 0.0, 0
    for start in range(0, len(text_ids) - 1, window):
        ids = text_ids[start:start + window]
        logits = decode_logits(model, ids).astype(np.float64)[:-1]             # position i predicts i + 1
        top = logits.max(axis=1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        nll -= log_probs[np.arange(len(ids) - 1), ids[1:]].sum()
        count += len(ids) - 1
    return float(np.exp(nll / count))


def evaluate_int8_activations(folder, name, text_ids, prompt, reference_greedy, with_perplexity):
    """The int8-activations table (module docstring)."""
    reference = GPT2LMHeadModel.from_pretrained(folder, backend="numba")
    model = convert_model(GPT2LMHeadModel.from_pretrained(folder, backend="numba"), "int8")
    forced = prompt + reference_greedy
    rows = [("float32", "float32", None, decode_perplexity(reference, text_ids) if with_perplexity else None)]
    for activations in ("float32", "int8"):
        engine.set_int8_compute(activations)
        try:
            top1 = decode_logits(model, forced)[len(prompt) - 1:-1].argmax(-1)
            agreement = float((top1 == np.array(reference_greedy)).mean())
            ppl = decode_perplexity(model, text_ids) if with_perplexity else None
        finally:
            engine.set_int8_compute("float32")
        rows.append(("int8", activations, agreement, ppl))
    lines = [f"### {name}: int8 activations (decode steps)\n",
             "| weights | activations | teacher-forced top-1 agreement, decode steps | perplexity, decode steps | change |",
             "|---|---|---:|---:|---:|"]
    for weights, activations, agreement, ppl in rows:
        agreement_cell = "reference" if agreement is None else f"{agreement:.1%}"
        ppl_cells = f"{ppl:.4f} | {100 * (ppl / rows[0][3] - 1):+.3f}%" if ppl is not None else "– | –"
        lines.append(f"| {weights} | {activations} | {agreement_cell} | {ppl_cells} |")
    return "\n".join(lines)


def evaluate(folder, name, text_ids, prompt, n_new, with_perplexity):
    models = {dtype: convert_model(GPT2LMHeadModel.from_pretrained(folder, backend="numba"), dtype)
              for dtype in DTYPES}
    precisions = ["highest"] + (["medium"] if amx.available() else [])
    reference = models["float32"]
    window = text_ids[:reference.config.n_positions][None]
    reference_logits = reference(window).logits
    reference_greedy = greedy(reference, prompt, n_new)
    forced = np.array(prompt + reference_greedy)[None]                  # [1, prompt + n_new]
    rows = []
    for precision in precisions:
        engine.set_float32_matmul_precision(precision)
        try:
            for dtype, model in models.items():
                if precision == "medium" and dtype == "float16":
                    continue                    # rounded to bfloat16 for the products anyway
                drift = np.abs(model(window).logits - reference_logits).max() / np.abs(reference_logits).max()
                top1 = model(forced).logits[0, len(prompt) - 1:-1].argmax(-1)   # predictions of the 200 tokens
                agreement = float((top1 == np.array(reference_greedy)).mean())
                own = greedy(model, prompt, n_new) if (dtype, precision) != ("float32", "highest") else reference_greedy
                same_prefix = next((i for i, (a, b) in enumerate(zip(own, reference_greedy)) if a != b), n_new)
                ppl = perplexity(model, text_ids) if with_perplexity else None
                rows.append((dtype, precision, weight_bytes(model) / 1e6, drift, agreement, same_prefix, ppl))
        finally:
            engine.set_float32_matmul_precision("highest")
    reference_ppl = rows[0][6]
    lines = [f"### {name}\n",
             "| weights | matmul precision | weight MB | logit drift (max rel) | greedy top-1 agreement, 200 tokens | "
             "identical greedy prefix | perplexity | change |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for dtype, precision, mb, drift, agreement, same_prefix, ppl in rows:
        ppl_cells = (f"{ppl:.4f} | {100 * (ppl / reference_ppl - 1):+.3f}%" if ppl is not None else "– | –")
        lines.append(f"| {dtype} | {precision} | {mb:.1f} | {drift:.2e} | {agreement:.1%} | {same_prefix}/{n_new} | "
                     f"{ppl_cells} |")
    return "\n".join(lines) + "\n\n" + evaluate_int8_activations(folder, name, text_ids, prompt, reference_greedy,
                                                              with_perplexity)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192, help="tinyshakespeare tokens to score")
    parser.add_argument("--new-tokens", type=int, default=200,
                        help="greedy tokens to compare (the demo model: at most its n_positions minus the prompt)")
    parser.add_argument("--gpt2", action="store_true", help="also a random GPT-2 124M (drift, agreement)")
    args = parser.parse_args()

    tokenizer = GPT2Tokenizer.from_pretrained(DEMO)
    text = (REPO / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    held_out = text[int(len(text) * 0.9):]
    text_ids = np.array(tokenizer.encode(held_out)[:args.tokens])
    prompt = tokenizer.encode("ROMEO:")
    print(f"tinyshakespeare: last 10% of the text, first {len(text_ids)} tokens; prompt 'ROMEO:'\n")
    demo_positions = GPT2LMHeadModel.from_pretrained(DEMO, backend="numpy").config.n_positions
    demo_new = min(args.new_tokens, demo_positions - len(prompt))      # the demo model's context is short
    print(evaluate(DEMO, "tiny-shakespeare (bundled demo model, trained)", text_ids, prompt,
                   demo_new, with_perplexity=True), flush=True)
    if args.gpt2:
        folder = bench.write_random_checkpoint(bench.default_folder("gpt2"), "gpt2")
        print()
        print(evaluate(folder, "GPT-2 124M, random weights (std 0.02)", text_ids, prompt, args.new_tokens,
                       with_perplexity=False))


if __name__ == "__main__":
    main()
