"""Lesson 05: embeddings, where ids become vectors.

The model's first step is two table lookups and an add:

    x = wte[input_ids] + wpe[position_ids]        [b, t] ids -> [b, t, n_embd]

wte [vocab_size, n_embd] has one row per token (and is reused, transposed, as the output layer:
lesson 08); wpe [n_positions, n_embd] one row per position 0..1023. Nothing else tells the model
where a token is. With a KV cache (lesson 09) the new tokens' positions continue after the cached
ones: n_past, n_past + 1, ...

We compute it by hand on a transformers-made fixture and check it against transformers'
hidden_states[0], then look at the chosen model's tables: nearest tokens in wte, and how similar
the position vectors are to each other (a figure).

    python -m lessons.l05_embeddings [--fast] [--figures DIR] [--model ...]
"""

import numpy as np

from lessons._common import (check, figure_path, fixture_weights, load_model, parse_args, pyplot, run,
                             save, title)


def embed(input_ids, position_ids, wte, wpe):
    """The piece this lesson teaches: two lookups and an add."""
    return wte[input_ids] + wpe[position_ids]                          # [b, t] -> [b, t, c]


def cosine_matrix(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("on the fixture (random weights, made by transformers)")
    config, weights, ref = fixture_weights("tiny")
    ids = ref["input_ids"]                                             # [2, 10]
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)    # 0..t-1 for every row
    x = embed(ids, positions, weights["wte.weight"], weights["wpe.weight"])
    print(f"input_ids {ids.shape}: {ids[0].tolist()}")
    print(f"wte {weights['wte.weight'].shape}, wpe {weights['wpe.weight'].shape} -> x {x.shape}")
    print(f"x[0, 0, :6] = {np.round(x[0, 0, :6], 4)}")
    print(f"what you should see: token {ids[0, 0]} at position 0 is now {x.shape[-1]} numbers (the first 6 shown), "
          f"row {ids[0, 0]} of wte plus row 0 of wpe")

    title("with a cache: 4 tokens already seen, the next 3 get positions 4, 5, 6")
    n_past = 4
    tail = embed(ids[:, n_past:n_past + 3], np.arange(n_past, n_past + 3)[None],
                 weights["wte.weight"], weights["wpe.weight"])
    print(f"positions {np.arange(n_past, n_past + 3).tolist()}: tail {tail.shape}")
    print("what you should see: the same rows as the full embedding's positions 4..6 (checked below)")

    title("the chosen model's tables")
    model, tok, description = load_model(args)
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    print(f"wte {wte.shape}  mean |x| {np.abs(wte).mean():.4f};  wpe {wpe.shape}  mean |x| {np.abs(wpe).mean():.4f}")
    words = [" king", " Paris", " three", " love"] if not args.fast else [" king"]
    for word in words:
        (token,) = tok.encode(word)
        sims = cosine_matrix(wte[token][None], wte)[0]
        nearest = np.argsort(-sims)[1:6]
        print(f"  nearest to {word!r} in wte: {[tok.decode([int(i)]) for i in nearest]}")
    print("what you should see: with trained weights, words used alike sit near each other (the demo model\n"
          "puts numbers near ' three'); random weights: no pattern")
    n = min(wpe.shape[0], 128 if args.fast else 1024)
    similarity = cosine_matrix(wpe[:n], wpe[:n])
    path = figure_path(args, "l05_position_similarity.png")
    if path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 5))
        image = ax.imshow(similarity, cmap="RdBu_r", vmin=-1, vmax=1)
        fig.colorbar(image, ax=ax, label="cosine similarity")
        ax.set_xlabel("position"), ax.set_ylabel("position")
        ax.set_title(f"wpe: position vectors vs each other\n{description}", fontsize=8)
        save(fig, path)

    title("checks")
    check("embeddings == transformers' hidden_states[0] (fixture)", x, ref["hidden_states"][0], tol=1e-5)
    check("positions n_past.. == the same rows of the full embedding", tail, x[:, n_past:n_past + 3], tol=0)
    from minigpt2.model import GPT2Model
    trace = {}
    GPT2Model(config, weights, backend="numpy")(ids, trace=trace)
    check("embeddings == minigpt2 GPT2Model trace['embed']", x, trace["embed"], tol=0)
    return 0


if __name__ == "__main__":
    run(main)
