"""Lesson 12: batching, padding and position ids.

A batch holds rows of different lengths, padded to the longest (lesson 04). Two things must
hold for a padded row to give exactly what it gives alone:

1. no real token may attend to a padding key: attention mask = causal AND key is real;
2. each real token must get the position it has alone. With right padding the real tokens are
   at 0, 1, 2, ... anyway. With left padding (needed for generation, so every row ends in a real
   token) they are not: the row [pad, pad, A, B] must give A position 0, B position 1:

       position_ids = cumsum(attention_mask) - 1     (clipped at 0 for the pads)

transformers' forward uses arange positions unless told (issue #18478); its generate() builds
cumsum positions. minigpt2 derives them from the mask whenever position_ids is not given.

    python -m lessons.l12_batching [--fast] [--model ...]
"""

import numpy as np

from lessons._common import check, fixture_weights, load_model, parse_args, run, title
from lessons.l05_embeddings import embed
from lessons.l06_layernorm_gelu import layer_norm
from lessons.l07_attention import MASK, block_attention
from lessons.l08_forward import forward, mlp, model_weights


def positions_from_mask(attention_mask):
    """[b, t] 0/1 -> [b, t] positions counting only real tokens. The first piece taught here."""
    return np.maximum(np.cumsum(attention_mask, axis=-1) - 1, 0)


def padded_forward(input_ids, attention_mask, weights, config, position_ids=None):
    """Lesson 08's forward with a padding mask. The second piece taught here."""
    if position_ids is None:
        position_ids = positions_from_mask(attention_mask)
    t = input_ids.shape[1]
    mask = MASK(t)[None] & attention_mask.astype(bool)[:, None, :]     # [b, t, t]: causal AND real key
    x = embed(input_ids, position_ids, weights["wte.weight"], weights["wpe.weight"])
    for layer in range(config.n_layer):
        x = x + block_attention(x, weights, layer, config, mask)[1]
        x = x + mlp(x, weights, layer, config)
    x = layer_norm(x, weights["ln_f.weight"], weights["ln_f.bias"], config.layer_norm_epsilon)
    return x @ weights["wte.weight"].T


def main(argv=None):
    args = parse_args(__doc__, argv)

    title("the chosen model: a padded batch vs each row alone")
    model, tok, description = load_model(args)
    mw = model_weights(model)
    texts = ["The sky is", "In the beginning God created the heaven and"]
    rows = [tok.encode(t) for t in texts]
    longest = max(map(len, rows))
    ids = np.full((2, longest), 50256)
    mask = np.zeros((2, longest), np.int64)
    for i, r in enumerate(rows):                                       # left padding
        ids[i, longest - len(r):], mask[i, longest - len(r):] = r, 1
    print(f"input_ids\n{ids}\nattention_mask\n{mask}\nposition_ids (cumsum - 1)\n{positions_from_mask(mask)}")
    batch_logits = padded_forward(ids, mask, mw, model.config)
    arange_logits = padded_forward(ids, mask, mw, model.config, position_ids=np.arange(longest)[None])
    alone = forward(np.array([rows[0]]), mw, model.config)[1]
    print(f"row 0 (left-padded) last logits vs alone: cumsum positions max diff "
          f"{np.abs(batch_logits[0, -1] - alone[0, -1]).max():.2e}; arange positions "
          f"{np.abs(arange_logits[0, -1] - alone[0, -1]).max():.2e}")
    for i, r in enumerate(rows):
        print(f"  next after {texts[i]!r}: {tok.decode([int(batch_logits[i, -1].argmax())])!r}")

    title("checks (fixture tiny: row 1 has 7 real tokens and 3 pads)")
    config, weights, ref = fixture_weights("tiny")
    right = padded_forward(ref["input_ids"], ref["attention_mask_right"], weights, config)
    left = padded_forward(ref["input_ids_left"], ref["attention_mask_left"], weights, config)
    real_r, real_l = ref["attention_mask_right"].astype(bool), ref["attention_mask_left"].astype(bool)
    check("right padding, real tokens == transformers", right[real_r], ref["logits_right_padded"][real_r],
          tol=1e-5, relative=True)
    check("left padding + cumsum positions, real tokens == transformers (positions given)", left[real_l],
          ref["logits_left_padded"][real_l], tol=1e-5, relative=True)
    alone = forward(ref["input_ids"][1:, :7], weights, config)[1][0]   # row 1's 7 tokens, no padding
    check("left-padded row 1 == the same 7 tokens alone", left[1, 3:], alone, tol=1e-5, relative=True)
    check("right-padded row 1 == the same 7 tokens alone", right[1, :7], alone, tol=1e-5, relative=True)
    check("chosen model: left-padded row == alone (last position)", batch_logits[0, -1], forward(
        np.array([rows[0]]), mw, model.config)[1][0, -1], tol=1e-4, relative=True)
    from minigpt2.model import GPT2LMHeadModel
    library = GPT2LMHeadModel(config, weights, backend="numpy")(ref["input_ids_left"],
                                                                attention_mask=ref["attention_mask_left"]).logits
    check("left padding == minigpt2 (positions from the mask)", left[real_l], library[real_l], tol=1e-5, relative=True)
    return 0


if __name__ == "__main__":
    run(main)
