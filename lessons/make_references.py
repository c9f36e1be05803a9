"""Write the lessons' reference files (committed, small) with the reference libraries.

    python lessons/make_references.py      # needs torch, transformers, tiktoken, tokenizers; ~10 s

Nothing here comes from minigpt2's own numerics: token ids come from tiktoken and Hugging Face
`tokenizers` (built offline from the package's encoder.json / vocab.bpe), numbers from torch and
transformers. The model references (logits, hidden states, attentions, cached decoding, padding,
loss) are tests/fixtures/models/*/reference.npz, made by tests/fixtures/make_fixtures.py.

Writes lessons/references/:
  tokenizer.json  ids for the lesson strings (tiktoken; tokenizers as a second opinion)
  numerics.npz    layer norm, GELU (tanh and erf), softmax and masked attention from torch
  sampling.npz    transformers' temperature / top-k / top-p warpers on fixed logits, and a
                  greedy `generate` on the tiny fixture model
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))

OUT = HERE / "references"
TEXTS = [
    "Hello world", " Hello world", "Hello, world. Is this-- a test?", "Implementations",
    "Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗", "I'm", "I'M", "y is ?", "\n",
    "  two  spaces\tand a tab\r\n", "déjà vu — naïve café", "12345 + 678 = 13023",
    "<|endoftext|>", "Hello<|endoftext|>world", "Alan Turing theorized that computers would one day become",
]
PADDED_BATCH = ["Hello world", "The quick brown fox jumps", "Hi"]
GREEDY_NEW_TOKENS = 12


def tokenizer_references():
    from minigpt2.tokenizer.reference import tiktoken_gpt2, tokenizers_gpt2

    tik, hf = tiktoken_gpt2(), tokenizers_gpt2()
    entries = []
    for text in TEXTS:
        entries.append({
            "text": text,
            "ordinary": tik.encode_ordinary(text),                        # "<|endoftext|>" as text
            "allowed": tik.encode(text, allowed_special="all"),           # "<|endoftext|>" -> 50256
            "pieces": [tik.decode([i]) for i in tik.encode_ordinary(text)],
            "tokenizers": hf.encode(text).ids,                            # HF's ByteLevel BPE
        })
    padding = {}
    for side in ("right", "left"):          # HF tokenizers' own padding: pad = eos = 50256
        hf.enable_padding(direction=side, pad_id=50256, pad_token="<|endoftext|>")
        batch = hf.encode_batch(PADDED_BATCH)
        padding[side] = {"input_ids": [e.ids for e in batch], "attention_mask": [e.attention_mask for e in batch]}
    hf.no_padding()
    return {"source": "tiktoken + tokenizers, from minigpt2/data/gpt2/{encoder.json,vocab.bpe}",
            "texts": entries, "padded_batch": PADDED_BATCH, "padding": padding}


def numerics_references():
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x_grid = torch.linspace(-6, 6, 1201, dtype=torch.float32)
    x = torch.randn(3, 5, 16, generator=g) * 3 + 1                     # not zero-mean on purpose
    weight, bias = torch.randn(16, generator=g), torch.randn(16, generator=g)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g) * 2 for _ in range(3))   # [b, h, t, d]
    mask = torch.ones(6, 6, dtype=torch.bool).tril()                   # causal, True = attend
    mask = mask[None].repeat(2, 1, 1)                                  # [b, t, s]
    mask[1, :, :2] = False                                             # row 1: two padded keys ...
    mask[1, :2, 0] = True                                              # ... but queries 0, 1 see key 0
    probs = torch.softmax((q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~mask[:, None], float("-inf")), -1)
    return {
        "x_grid": x_grid.numpy(),
        "gelu_tanh": F.gelu(x_grid, approximate="tanh").numpy(),
        "gelu_erf": F.gelu(x_grid).numpy(),
        "ln_x": x.numpy(), "ln_weight": weight.numpy(), "ln_bias": bias.numpy(),
        "ln_out": F.layer_norm(x, (16,), weight, bias, eps=1e-5).numpy(),
        "softmax_in": x[0].numpy(), "softmax_out": torch.softmax(x[0], -1).numpy(),
        "q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "mask": mask.numpy(),
        "attn_probs": probs.numpy(),
        "attn_out": F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None]).numpy(),
    }


def sampling_references():
    import torch
    from transformers import GPT2LMHeadModel
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, generator=g) * 2.5                     # 3 rows, a 40-token "vocab"
    logits[2, :6] = torch.tensor([4.0, 4.0, 4.0, 1.0, 1.0, 1.0])        # ties at the top-k boundary
    ids = torch.zeros(3, 1, dtype=torch.long)
    out = {"logits": logits.numpy()}
    for t in (0.5, 2.0):
        out[f"temperature_{t}"] = TemperatureLogitsWarper(t)(ids, logits.clone()).numpy()
    for k in (1, 2, 5):
        out[f"top_k_{k}"] = TopKLogitsWarper(k)(ids, logits.clone()).numpy()
    for p in (0.5, 0.9):
        out[f"top_p_{p}"] = TopPLogitsWarper(p)(ids, logits.clone()).numpy()
    # greedy decoding on the tiny fixture model (vocab 512, random weights at O(1) scale)
    model = GPT2LMHeadModel.from_pretrained(REPO_ROOT / "tests/fixtures/models/tiny",
                                            attn_implementation="eager").eval()
    prompt = torch.from_numpy(np.load(REPO_ROOT / "tests/fixtures/models/tiny/reference.npz")["input_ids"][:, :4])
    with torch.no_grad():
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                max_new_tokens=GREEDY_NEW_TOKENS, min_new_tokens=GREEDY_NEW_TOKENS,
                                pad_token_id=0, eos_token_id=None)
    out["greedy_prompt"], out["greedy_ids"] = prompt.numpy(), greedy.numpy()
    return out


def main():
    import torch
    import transformers

    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    tok = tokenizer_references()
    tok["versions"] = versions
    (OUT / "tokenizer.json").write_text(json.dumps(tok, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    np.savez_compressed(OUT / "numerics.npz", **numerics_references(), versions=json.dumps(versions))
    np.savez_compressed(OUT / "sampling.npz", **sampling_references(), versions=json.dumps(versions))
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(REPO_ROOT)}  {f.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
