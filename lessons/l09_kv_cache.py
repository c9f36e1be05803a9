"""Lesson 09: the KV cache, so each new token costs one position, not the whole prefix.

Generating token t+1 with lesson 08's forward recomputes all t positions again. But a position's
key and value never change once computed (causal: nothing later flows back). So keep them:

- prefill: run the prompt once, store every layer's k and v [b, h, t, d] in a preallocated
  array [b, h, n_positions, d] at offset 0;
- decode: feed only the new token (position = tokens so far), write its k, v at the offset,
  attend over everything stored so far.

The code is lesson 07/08's, with the changed lines marked `# NEW`. The cached logits must equal
one full pass (up to float rounding), and transformers' own cached decode. Past n_positions there
is no position embedding left: the cache refuses with a clear error.

The cost model (`decode_cost`, derived in lessons/l09_kv_cache.md): a new token costs 2 FLOPs per
matmul weight (12 c^2 per block, V c for the head) plus 4 s c per block to read s cached positions;
without the cache all s positions are computed again. The price: 2 (k, v) x n_layer x c values per
token of memory. A decode step streams every weight once: bandwidth / weight bytes caps tokens/s.

    python -m lessons.l09_kv_cache [--fast] [--model ...]
"""

import time

import numpy as np

from lessons import l07_attention as l07
from lessons._common import check, check_equal, check_true, fixture_weights, load_model, parse_args, run, title
from lessons.l05_embeddings import embed
from lessons.l06_layernorm_gelu import layer_norm
from lessons.l08_forward import forward, mlp, model_weights


class Cache:                                                            # NEW: the whole cache
    def __init__(self, config, batch):
        shape = (batch, config.n_head, config.n_positions, config.head_dim)
        self.keys = [np.zeros(shape, np.float32) for _ in range(config.n_layer)]
        self.values = [np.zeros(shape, np.float32) for _ in range(config.n_layer)]
        self.length = 0                                                 # tokens stored so far

    def append(self, layer, k, v):
        """Write k, v [b, h, t, d] at offset `length`; return all keys, values so far."""
        end = self.length + k.shape[2]
        if end > self.keys[layer].shape[2]:
            raise ValueError(f"cache full: {self.length} + {k.shape[2]} tokens > n_positions "
                             f"{self.keys[layer].shape[2]}")
        self.keys[layer][:, :, self.length:end], self.values[layer][:, :, self.length:end] = k, v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def block_attention(x, weights, layer, config, cache):
    w = lambda name: weights[f"h.{layer}.{name}"]                      # noqa: E731
    h = layer_norm(x, w("ln_1.weight"), w("ln_1.bias"), config.layer_norm_epsilon)
    qkv = h @ w("attn.c_attn.weight") + w("attn.c_attn.bias")
    q, k, v = (l07.split_heads(a, config.n_head) for a in np.split(qkv, 3, axis=-1))
    k, v = cache.append(layer, k, v)                                    # NEW: past + new keys [b, h, s, d]
    t, s = q.shape[2], k.shape[2]
    mask = l07.MASK(s)[s - t:]                                          # NEW: the last t rows of the [s, s] mask
    probs = l07.attention_probs(q, k, mask, l07.attention_scale(config, layer))   # [b, h, t, s]
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
    return out @ w("attn.c_proj.weight") + w("attn.c_proj.bias")


def forward_cached(input_ids, weights, config, cache):
    """ids [b, t] of *new* tokens -> logits [b, t, v]; reads and extends `cache`."""
    n_past = cache.length                                               # NEW
    if n_past + input_ids.shape[1] > config.n_positions:                # NEW: wpe has n_positions rows
        raise ValueError(f"{n_past} cached + {input_ids.shape[1]} new tokens > n_positions {config.n_positions}")
    positions = np.broadcast_to(np.arange(n_past, n_past + input_ids.shape[1]), input_ids.shape)  # NEW
    x = embed(input_ids, positions, weights["wte.weight"], weights["wpe.weight"])
    for layer in range(config.n_layer):
        x = x + block_attention(x, weights, layer, config, cache)       # NEW: cache passed in
        x = x + mlp(x, weights, layer, config)
    cache.length += input_ids.shape[1]                                  # NEW: every layer wrote t more
    x = layer_norm(x, weights["ln_f.weight"], weights["ln_f.bias"], config.layer_norm_epsilon)
    return x @ weights["wte.weight"].T


def prefill_then_decode(ids, weights, config, n_prefill):
    """Prompt ids[:, :n_prefill] at once, then one token at a time: logits for every position."""
    cache = Cache(config, ids.shape[0])
    pieces = [forward_cached(ids[:, :n_prefill], weights, config, cache)]
    for i in range(n_prefill, ids.shape[1]):
        pieces.append(forward_cached(ids[:, i:i + 1], weights, config, cache))
    return np.concatenate(pieces, axis=1), cache


def greedy_generate(ids, weights, config, n_new):
    """Greedy decoding on the cache: prefill the prompt, then one token per step."""
    cache = Cache(config, ids.shape[0])
    logits = forward_cached(ids, weights, config, cache)
    for _ in range(n_new):
        next_id = logits[:, -1].argmax(-1)[:, None]                     # the most likely token
        ids = np.concatenate([ids, next_id], axis=1)
        logits = forward_cached(next_id, weights, config, cache)       # one position per step
    return ids


def decode_cost(config, s, bytes_per_value=4):
    """The cost of the next token at context length s: (FLOPs with the cache, FLOPs without, cache bytes
    per token, weight bytes streamed per step). Counts multiply-adds x 2; layer norms, GELU, biases ignored."""
    c, v, L = config.n_embd, config.vocab_size, config.n_layer
    matmul = L * (3 * c * c + c * c + 2 * c * config.inner_dim) + v * c        # 12 c^2 per block with a 4c MLP
    cached = 2 * matmul + L * 4 * s * c                                  # q.k and probs @ v over s keys
    recomputed = s * 2 * matmul + L * 2 * s * s * c                      # every position again, the causal triangle
    return cached, recomputed, 2 * L * c * bytes_per_value, matmul * bytes_per_value   # wpe: one row per step


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("the fixture: prefill 4 tokens, then decode 6 one at a time")
    config, weights, ref = fixture_weights("tiny")
    ids = ref["input_ids"]
    cached, cache = prefill_then_decode(ids, weights, config, n_prefill=4)
    _, full = forward(ids, weights, config)
    print(f"cache keys per layer {cache.keys[0].shape} (preallocated), {cache.length} filled; "
          f"max |cached - full| = {np.abs(cached - full).max():.2e}")
    print("what you should see: the cached logits equal the full pass up to float32 rounding (~1e-5)")

    title("the chosen model: greedy decoding, cached vs recomputing everything")
    model, tok, description = load_model(args)
    mw = model_weights(model)
    prompt = np.array([tok.encode("The meaning of life is")])
    n_new = 3 if args.fast else 8
    start = time.perf_counter()
    tokens = greedy_generate(prompt, mw, model.config, n_new)
    cached_s = time.perf_counter() - start
    print(f"{tok.decode(tokens[0])!r}")
    start = time.perf_counter()
    recomputed = prompt
    for _ in range(n_new):                                              # no cache: the whole prefix each time
        _, logits = forward(recomputed, mw, model.config)
        recomputed = np.concatenate([recomputed, logits[:, -1:].argmax(-1)], axis=1)
    print(f"{n_new} tokens: {cached_s * 1e3:.0f} ms with the cache, {(time.perf_counter() - start) * 1e3:.0f} ms "
          f"recomputing every prefix")

    title("the cost model: GPT-2 124M in float32, then measured on the chosen model")
    from minigpt2.config import GPT2Config
    gpt2 = GPT2Config()
    for s in (128, 1024):
        f_cached, f_full, kv_bytes, weight_bytes = decode_cost(gpt2, s)
        print(f"  context {s:4d}: {f_cached / 1e9:.2f} GFLOP/token with the cache, {f_full / 1e9:6.1f} without; "
              f"cache {kv_bytes * s / 2**20:.0f} MiB per sequence ({kv_bytes // 1024} KiB per token)")
    print(f"  one decode step streams {weight_bytes / 1e6:.0f} MB of weights: at 20 / 100 GB/s of memory bandwidth "
          f"at most {20e9 / weight_bytes:.0f} / {100e9 / weight_bytes:.0f} tokens/s for one sequence")
    lengths = [8, 16, 32] if args.fast else [16, 32, 64, 128]
    lengths = [s for s in lengths if s < model.config.n_positions]
    for s in lengths:
        ids_s = np.resize(prompt[0], s)[None]                             # a context of s tokens
        timings = []
        for step in ("cached", "recomputed"):
            best = np.inf
            for _ in range(3 if args.fast else 5):
                cache = Cache(model.config, 1)
                forward_cached(ids_s[:, :-1], mw, model.config, cache)         # the prefix is already cached
                start = time.perf_counter()
                _ = (forward_cached(ids_s[:, -1:], mw, model.config, cache) if step == "cached"   # one new position
                     else forward(ids_s, mw, model.config))                    # or all s positions again
                best = min(best, time.perf_counter() - start)
            timings.append(best)
        f_cached, f_full, _, _ = decode_cost(model.config, s)
        print(f"  context {s:4d}: next token {timings[0] * 1e3:6.2f} ms cached, {timings[1] * 1e3:7.2f} ms recomputed "
              f"(x{timings[1] / timings[0]:.0f} measured, x{f_full / f_cached:.0f} in FLOPs)")
    print("what you should see: the cached step costs about the same at every length (it is the weights,\n"
          "mostly the V x c head); recomputing grows with the length, so the gap grows too. Timings on a\n"
          "busy machine are noisy; the FLOP ratio is exact")

    title("overflow: n_positions is the end")
    small = Cache(config, 1)
    try:
        forward_cached(np.zeros((1, config.n_positions + 1), np.int64), weights, config, small)
    except ValueError as error:
        print(f"ours: ValueError: {error}")
    from minigpt2.model import GPT2LMHeadModel
    library = GPT2LMHeadModel(config, weights, backend="numpy")
    out = library(ids[:, :1], use_cache=True)
    try:
        library(np.zeros((2, config.n_positions), np.int64), past_key_values=out.past_key_values, use_cache=True)
        overflow_message = None
    except ValueError as error:
        overflow_message = str(error)
    print(f"minigpt2: ValueError: {overflow_message}")
    print("what you should see: both refuse, and say the limit: position n_positions has no wpe row")

    title("checks")
    check("cached logits == one full pass (ours)", cached, full, tol=1e-5, relative=True)
    check("cached logits == transformers' own cached decode (fixture logits_decode)", cached,
          ref["logits_decode"], tol=1e-5, relative=True)
    pieces, past = [], None
    for i in range(ids.shape[1]):
        step = library(ids[:, i:i + 1], past_key_values=past, use_cache=True)
        pieces.append(step.logits)
        past = step.past_key_values
    check("cached logits == minigpt2 KVCache decode", cached, np.concatenate(pieces, 1), tol=1e-5, relative=True)
    check("chosen model: cached greedy tokens == recomputed greedy tokens", tokens, recomputed, tol=0)
    from lessons.l08_forward import parameter_shapes
    shapes = parameter_shapes(gpt2)
    matmul = sum(np.prod(shapes[f"h.0.{n}.weight"]) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    check_equal("a block's matmul weights == 12 c^2 (the cost model; shapes from lesson 08)", int(matmul), 12 * 768**2)
    check_equal("cache bytes per token == what Cache allocates per position (chosen model)", decode_cost(
        model.config, 1)[2], sum(a.nbytes for a in Cache(model.config, 1).keys + Cache(model.config, 1).values)
        // model.config.n_positions)
    check_true("minigpt2 refuses to overflow n_positions with a clear ValueError",
               overflow_message is not None and "n_positions" in overflow_message, repr(overflow_message))
    return 0


if __name__ == "__main__":
    run(main)
