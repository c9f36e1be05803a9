"""Train the bundled demo model `tiny-shakespeare` and write it into the package.

A development tool, not part of the library: it needs torch and transformers (the model is
transformers' GPT2LMHeadModel), while the result is read by minigpt2 with NumPy alone.

    python tools/train_demo.py                      # the real run (24 minutes on 1 shared thread)
    python tools/train_demo.py --smoke --out /tmp/x # 30 steps: a 1-2 minute check of every step
    python tools/train_demo.py --export-only        # redo evaluation + files from the saved checkpoint

What it does, in order:
  1. tokenizes data/tinyshakespeare.txt with minigpt2's own GPT2Tokenizer: the first 90% of the
     characters is the training text, the last 10% the validation text (nanoGPT's split);
  2. computes a unigram baseline: token frequencies of the training text with add-one (Laplace)
     smoothing over all 50257 ids, scored on the validation text;
  3. trains a small GPT-2 with AdamW (warmup + cosine decay), seeded, with a fixed batch order,
     on one thread;
  4. rounds the weights to float16, measures validation perplexity of exactly what is shipped, and
     writes config.json (minigpt2.config), model.safetensors (minigpt2.weights.safetensors, HF key names,
     tied head so no lm_head), vocab.json + merges.txt;
  5. checks that transformers loads the folder to the same logits, makes the samples (greedy with
     torch, checked against minigpt2; sampled with minigpt2) and writes the model card README.md
     from tools/demo_model_card.md.

Why it is fast enough on a CPU: the vocabulary has 50257 tokens, so most of the work is the tied
output layer (logits = hidden @ wte.T) and its softmax, not the 4 small blocks. The loss below
computes that layer in row chunks and makes its gradients at the same time (a fused
linear + cross-entropy), so the [tokens, 50257] logits never exist in memory all at once. Measured
side by side for 1024 tokens, n_embd 128, one thread: 0.4 s for forward + backward of the output
layer and loss, against 1.5 s for materializing the logits and calling F.cross_entropy.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from minigpt2.config import GPT2Config as MiniConfig          # noqa: E402
from minigpt2.weights.safetensors import save_file                    # noqa: E402
from minigpt2.tokenizer import GPT2Tokenizer                  # noqa: E402

DATA_FILE = REPO_ROOT / "data" / "tinyshakespeare.txt"
DEFAULT_OUT = REPO_ROOT / "minigpt2" / "models" / "tiny-shakespeare"
CARD_TEMPLATE = REPO_ROOT / "tools" / "demo_model_card.md"
TRAIN_FRACTION = 0.9
SAMPLE_PROMPT = "ROMEO:"
SAMPLE_TOKENS = 60
SAMPLING = dict(temperature=0.8, top_k=50, seed=0)    # the card's sampled text (minigpt2's sampler)


# ---------------------------------------------------------------------------------- data

def load_splits(tokenizer):
    """(train ids, validation ids) as int64 arrays: split the text by characters, then tokenize."""
    text = DATA_FILE.read_text(encoding="utf-8")
    cut = int(len(text) * TRAIN_FRACTION)
    train = np.array(tokenizer.encode_ordinary(text[:cut]), dtype=np.int64)
    val = np.array(tokenizer.encode_ordinary(text[cut:]), dtype=np.int64)
    return train, val


def unigram_perplexity(train, val, vocab_size):
    """Perplexity on `val` of add-one smoothed token frequencies of `train` (over the whole vocabulary)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    log_probs = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    return float(np.exp(-log_probs[val].mean()))


def batch_at(data, offsets, context):
    """Windows starting at `offsets` -> inputs [b, context] and next-token targets [b, context]."""
    rows = offsets[:, None] + torch.arange(context + 1)[None, :]     # [b, context + 1]
    window = data[rows]
    return window[:, :-1], window[:, 1:]


# ---------------------------------------------------------------------------------- loss

class TiedHeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits = hidden @ wte.T, computed `chunk` rows at a time.

    forward also computes both gradients (softmax - one_hot is all backward needs), so no
    [n, vocab] tensor is kept for backward; backward only scales them by grad_output.
    """

    @staticmethod
    def forward(ctx, hidden, wte, targets, chunk):
        n, vocab = hidden.shape[0], wte.shape[0]
        hidden, wte = hidden.detach(), wte.detach()
        grad_hidden = torch.empty_like(hidden)
        grad_wte = torch.zeros_like(wte)
        logits = torch.empty(chunk, vocab)            # reused buffer [chunk, vocab]
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            rows = torch.arange(stop - start)
            h, t = hidden[start:stop], targets[start:stop]
            z = torch.mm(h, wte.t(), out=logits[: stop - start])           # [m, c] @ [c, V] -> [m, V]
            target_logit = z[rows, t]
            z_max = z.amax(dim=1, keepdim=True)
            z.sub_(z_max).exp_()                                          # z = exp(logit - max)
            z_sum = z.sum(dim=1, keepdim=True)
            log_normalizer = (z_max + z_sum.log()).squeeze(1)
            total += (log_normalizer - target_logit).double().sum()
            z.div_(z_sum)                                                 # softmax
            z[rows, t] -= 1.0                                             # d loss_i / d logits_i
            torch.mm(z, wte, out=grad_hidden[start:stop])                 # [m, V] @ [V, c] -> [m, c]
            grad_wte.addmm_(z.t(), h)                                     # [V, m] @ [m, c] -> [V, c]
        ctx.save_for_backward(grad_hidden / n, grad_wte / n)
        return (total / n).to(torch.float32)

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_wte = ctx.saved_tensors
        return grad_hidden * grad_output, grad_wte * grad_output, None, None


def lm_loss(model, inputs, targets, chunk=128):
    """Mean next-token loss of the tied-head language model on one batch."""
    hidden = model.transformer(input_ids=inputs).last_hidden_state    # [b, t, c]
    n_embd = hidden.shape[-1]
    return TiedHeadCrossEntropy.apply(hidden.reshape(-1, n_embd), model.transformer.wte.weight,
                                      targets.reshape(-1), chunk)


def check_loss(vocab_size, n_embd):
    """TiedHeadCrossEntropy == F.cross_entropy(hidden @ wte.T), values and both gradients (a few ms)."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, n_embd, generator=generator, requires_grad=True)
    wte = torch.randn(vocab_size, n_embd, generator=generator).requires_grad_()
    targets = torch.randint(0, vocab_size, (20,), generator=generator)
    ours = TiedHeadCrossEntropy.apply(hidden, wte, targets, 8)          # chunks of 8, 8 and 4 rows
    ours_grads = torch.autograd.grad(2 * ours, (hidden, wte))
    reference = torch.nn.functional.cross_entropy(hidden @ wte.t(), targets)
    reference_grads = torch.autograd.grad(2 * reference, (hidden, wte))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(ours_grads, reference_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@torch.no_grad()
def evaluate(model, ids, context):
    """Perplexity over `ids` cut into consecutive windows of `context` tokens (each scored in full)."""
    model.eval()
    data = torch.from_numpy(ids)
    n_windows = (len(ids) - 1) // context
    total, count = 0.0, 0
    for w in range(n_windows):
        inputs, targets = batch_at(data, torch.tensor([w * context]), context)
        hidden = model.transformer(input_ids=inputs).last_hidden_state[0]   # [t, c]
        logits = hidden @ model.transformer.wte.weight.t()                  # [t, V]
        total += torch.nn.functional.cross_entropy(logits, targets[0], reduction="sum").item()
        count += context
    # the tail shorter than one window is scored with the context it has
    tail = len(ids) - 1 - n_windows * context
    if tail > 0:
        inputs, targets = batch_at(data, torch.tensor([n_windows * context]), tail)
        hidden = model.transformer(input_ids=inputs).last_hidden_state[0]
        logits = hidden @ model.transformer.wte.weight.t()
        total += torch.nn.functional.cross_entropy(logits, targets[0], reduction="sum").item()
        count += tail
    model.train()
    return math.exp(total / count)


# ---------------------------------------------------------------------------------- training

def learning_rate(step, args):
    """Linear warmup to args.lr, then cosine decay to args.lr * args.min_lr_ratio at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def context_at(step, args):
    """Short windows for most of training (cheap, many distinct batches), full n_positions at the end
    so that every row of wpe is trained."""
    return args.short_context if step < args.steps * args.short_fraction else args.n_positions


def build_model(args, vocab_size):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=vocab_size, n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout,
                        embd_pdrop=args.dropout, attn_pdrop=args.dropout)
    return GPT2LMHeadModel(config)


def make_optimizer(model, args):
    """AdamW; weight decay on the matrices (wte, wpe, the four Conv1D weights), not on biases/LayerNorm."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def train(model, train_ids, val_ids, args, log):
    data = torch.from_numpy(train_ids)
    optimizer = make_optimizer(model, args)
    batches = torch.Generator().manual_seed(args.seed)    # the batch order: fixed by the seed
    model.train()
    start, running = time.time(), None
    for step in range(args.steps):
        context = context_at(step, args)
        batch_size = args.batch_tokens // context
        offsets = torch.randint(0, len(data) - context - 1, (batch_size,), generator=batches)
        inputs, targets = batch_at(data, offsets, context)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        loss = lm_loss(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        last = step == args.steps - 1
        if step % args.log_every == 0 or last:
            log(f"step {step:5d}  context {context:3d}  lr {learning_rate(step, args):.2e}  "
                f"loss {loss.item():.3f} (avg {running:.3f})  {time.time() - start:6.0f} s")
        if args.eval_every and step > 0 and (step % args.eval_every == 0 or last):
            log(f"step {step:5d}  val perplexity (first 8192 tokens) "
                f"{evaluate(model, val_ids[:8193], args.n_positions):.1f}")
    return time.time() - start


def round_to_float16(model):
    """Round every weight to float16 and back, in place: the model is then exactly what is shipped."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))


# ---------------------------------------------------------------------------------- export

def export(model, tokenizer, folder, args):
    """config.json + model.safetensors (float16, HF names, no lm_head: tied) + vocab.json/merges.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to(torch.float16).numpy()
               for name, tensor in model.transformer.state_dict().items()
               if name.split(".")[-2:] not in (["attn", "bias"], ["attn", "masked_bias"])}  # buffers
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    MiniConfig(vocab_size=model.config.vocab_size, n_positions=args.n_positions, n_embd=args.n_embd,
               n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout,
               embd_pdrop=args.dropout, attn_pdrop=args.dropout).save_pretrained(folder)
    tokenizer.save_vocabulary(folder)
    return tensors


def check_with_transformers(model, folder, val_ids):
    """Relative max logit difference between the trained model and transformers loading the folder."""
    from transformers import GPT2LMHeadModel
    loaded = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    loaded.eval()
    model.eval()
    inputs = torch.from_numpy(val_ids[None, :64])
    with torch.no_grad():
        reference = model(inputs).logits
        logits = loaded(inputs).logits
    return float((logits - reference).abs().max() / reference.abs().max())


def greedy_sample(model, tokenizer, prompt, max_new_tokens):
    ids = torch.tensor([tokenizer.encode_ordinary(prompt)])
    model.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(ids).logits[0, -1]
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return tokenizer.decode(ids[0].tolist())


def minigpt2_samples(folder, tokenizer):
    """(greedy text, sampled text) from minigpt2's own engine loading the exported folder."""
    from minigpt2.model import GPT2LMHeadModel as MiniModel
    model = MiniModel.from_pretrained(folder, backend="numpy")
    prompt = [tokenizer.encode_ordinary(SAMPLE_PROMPT)]
    greedy = model.generate(prompt, max_new_tokens=SAMPLE_TOKENS, do_sample=False)
    sampled = model.generate(prompt, max_new_tokens=SAMPLE_TOKENS, do_sample=True, **SAMPLING)
    return tokenizer.decode(greedy[0]), tokenizer.decode(sampled[0])


def write_model_card(folder, summary, args):
    """README.md from tools/demo_model_card.md, with this run's numbers, samples and checksums."""
    import string
    rows = []
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        rows.append(f"| `{name}` | {os.path.getsize(folder / name):,} | `{sha256_of(folder / name)}` |")
    values = dict(
        size_mb=f"{summary['model_safetensors_bytes'] / 1e6:.1f}", train_tokens=f"{summary['train_tokens']:,}",
        val_tokens=f"{summary['val_tokens']:,}", steps=args.steps, warmup=args.warmup, lr=f"{args.lr:g}",
        min_lr=f"{args.lr * args.min_lr_ratio:g}", seed=args.seed,
        epochs=f"{args.steps * args.batch_tokens / summary['train_tokens']:.1f}",
        train_minutes=f"{summary['train_seconds'] / 60:.0f}", unigram=f"{summary['unigram_val_perplexity']:.1f}",
        val_ppl=f"{summary['val_perplexity']:.1f}", val_ppl32=f"{summary['val_perplexity_float32']:.1f}",
        hf_diff=f"{summary['transformers_relative_logit_diff']:.1e}", greedy=summary["greedy_sample"],
        sampled=summary["sampled_sample"], files_table="\n".join(rows))
    text = string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(values)
    (folder / "README.md").write_text(text, encoding="utf-8")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-positions", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-tokens", type=int, default=1024, help="tokens per optimizer step")
    parser.add_argument("--short-context", type=int, default=64)
    parser.add_argument("--short-fraction", type=float, default=0.8,
                        help="fraction of the steps trained with --short-context windows")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/tiny-shakespeare-trained.pt"),
                        help="where the trained float32 weights are saved (torch.save) before export")
    parser.add_argument("--export-only", action="store_true",
                        help="skip training: load --checkpoint and redo the evaluation and export")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny configuration (30 steps) to check the whole pipeline quickly")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.eval_every, args.log_every = 30, 5, 15, 5
        args.checkpoint = Path("/tmp/tiny-shakespeare-smoke.pt")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)          # a shared machine; also makes the run bit-reproducible
    torch.manual_seed(args.seed)
    log_lines = []

    def log(line):
        print(line, flush=True)
        log_lines.append(line)

    tokenizer = GPT2Tokenizer.from_pretrained("gpt2")     # the package's vocabulary, offline
    train_ids, val_ids = load_splits(tokenizer)
    vocab_size = len(tokenizer)
    unigram = unigram_perplexity(train_ids, val_ids, vocab_size)
    log(f"train {len(train_ids)} tokens, validation {len(val_ids)} tokens; "
        f"unigram (add-one) validation perplexity {unigram:.1f}")

    check_loss(vocab_size, args.n_embd)
    model = build_model(args, vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {args.n_layer} layers, n_embd {args.n_embd}, n_head {args.n_head}, "
        f"n_positions {args.n_positions}: {n_params:,} parameters "
        f"({model.transformer.wte.weight.numel():,} in the tied wte)")
    if args.export_only:
        model.load_state_dict(torch.load(args.checkpoint))
        seconds = json.loads(args.checkpoint.with_suffix(".json").read_text())["train_seconds"]
    else:
        seconds = train(model, train_ids, val_ids, args, log)
        torch.save(model.state_dict(), args.checkpoint)
        log(f"trained {args.steps} steps in {seconds:.0f} s; float32 weights saved to {args.checkpoint}")

    float32_perplexity = evaluate(model, val_ids, args.n_positions)
    round_to_float16(model)
    val_perplexity = evaluate(model, val_ids, args.n_positions)
    log(f"validation perplexity {val_perplexity:.2f} (float16 weights; float32 {float32_perplexity:.2f}); "
        f"unigram {unigram:.1f}")

    export(model, tokenizer, args.out, args)
    relative_diff = check_with_transformers(model, args.out, val_ids)
    log(f"transformers.from_pretrained({args.out.name}) vs trained model: max |logit diff| / max |logit| "
        f"= {relative_diff:.1e}")
    summary = {
        "command": " ".join(["python tools/train_demo.py", *(sys.argv[1:] if argv is None else argv)]),
        "seed": args.seed, "steps": args.steps, "train_seconds": round(seconds),
        "train_tokens": len(train_ids), "val_tokens": len(val_ids), "parameters": n_params,
        "val_perplexity": round(val_perplexity, 2), "val_perplexity_float32": round(float32_perplexity, 2),
        "unigram_val_perplexity": round(unigram, 1), "transformers_relative_logit_diff": relative_diff,
        "greedy_sample": greedy_sample(model, tokenizer, SAMPLE_PROMPT, SAMPLE_TOKENS),
        "model_safetensors_sha256": sha256_of(args.out / "model.safetensors"),
        "model_safetensors_bytes": os.path.getsize(args.out / "model.safetensors"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "log": log_lines,
    }
    mini_greedy, summary["sampled_sample"] = minigpt2_samples(args.out, tokenizer)
    if mini_greedy != summary["greedy_sample"]:
        log(f"WARNING: minigpt2's greedy text differs from torch's:\n{mini_greedy!r}\n{summary['greedy_sample']!r}")
    write_model_card(args.out, summary, args)
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}, indent=2))
    summary_file = args.checkpoint.with_suffix(".json")
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary (for the model card) written to {summary_file}")
    return summary


if __name__ == "__main__":
    main()
