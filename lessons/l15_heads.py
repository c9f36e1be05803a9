"""Lesson 15: task heads: one small matrix on top of the body.

The body (lessons 05-08) turns ids into hidden states h [b, t, c]. A task head is a linear layer
(torch nn.Linear layout: weight [n_out, c], so h @ W.T + b) reading some of them:

- sequence classification (score.weight, no bias): a causal model has read the whole text only
  at its *last real token*, so that token's state is scored. With padding, "last" must skip the
  pads: the rightmost position whose attention_mask is 1 (works for left and right padding).
  transformers falls back to "the rightmost token that is not pad_token_id", and since GPT-2 has
  no pad token people set pad = eos: a real <|endoftext|> at the end then counts as padding.
- token classification (classifier.weight, .bias): every position gets its own label scores.
- multiple choice (GPT2DoubleHeadsModel): each candidate is its own row; one score per candidate
  from the state at mc_token_ids (default: the last position), next to the tied LM head.
  mc_token_ids [b, n_choices] names, per candidate, the position whose state is scored (usually a
  classification token appended to each candidate). token_type_ids [b, t] are optional segment
  ids (e.g. 0 = context, 1 = candidate); GPT-2 has no segment table, so transformers looks them
  up in wte, the token table itself, and adds wte[token_type_ids] to the embeddings.

The checks compare each head with transformers' (tests/fixtures/heads, made by transformers).

    python -m lessons.l15_heads [--fast]
"""

import numpy as np

from lessons._common import FIXTURES_DIR, check, check_equal, parse_args, run, title


def last_real_index(attention_mask):
    """[b, t] 0/1 -> [b] the rightmost position holding a real token. The first piece taught here."""
    positions = np.arange(attention_mask.shape[1])
    return (positions * (attention_mask != 0)).argmax(axis=-1)


def classify_sequences(h, attention_mask, score_weight):
    """h [b, t, c] -> [b, num_labels]: score the last real token. The second piece."""
    pooled = h[np.arange(h.shape[0]), last_real_index(attention_mask)]  # [b, t, c] -> [b, c]
    return pooled @ score_weight.T                                      # [b, c] -> [b, num_labels]


def head_fixture(name):
    """(config, body GPT2Model (numpy), head tensors, transformers' reference arrays)."""
    from minigpt2.weights.checkpoints import load_weights
    from minigpt2.config import GPT2Config
    from minigpt2.model import GPT2Model

    folder = FIXTURES_DIR.parent / "heads" / name
    config = GPT2Config.from_pretrained(folder)
    body, heads = load_weights(folder, config)
    return config, GPT2Model(config, body, backend="numpy"), heads, dict(np.load(folder / "reference.npz"))


def main(argv=None):
    parse_args(__doc__, argv)                                           # --fast changes nothing here

    title("sequence classification: which token is 'last'?")
    config, body, heads, ref = head_fixture("seqcls")
    score = heads["score.weight"]                                       # [num_labels, c]
    for side in ("right", "left"):
        ids, mask = ref[f"input_ids_{side}"], ref[f"attention_mask_{side}"]
        print(f"{side} padding, attention_mask\n{mask}\n  last real index {last_real_index(mask)}")
    right = classify_sequences(body(ref["input_ids_right"], attention_mask=ref["attention_mask_right"])
                               .last_hidden_state, ref["attention_mask_right"], score)
    left = classify_sequences(body(ref["input_ids_left"], attention_mask=ref["attention_mask_left"])
                              .last_hidden_state, ref["attention_mask_left"], score)
    labels = [config.id2label[int(i)] for i in right.argmax(-1)] if getattr(config, "id2label", None) else None
    print(f"scores (right padding)\n{np.round(right, 3)}\npredicted: {labels or right.argmax(-1)}")

    title("the pad = eos trap")
    trap = ref["trap_ids"]                                              # ends in a real eos (= pad id 0)
    h = body(trap).last_hidden_state
    pad_rule = (np.arange(trap.shape[1]) * (trap != config.pad_token_id)).argmax(-1)
    print(f"ids {trap[0].tolist()}: pad-id rule picks position {pad_rule.tolist()}, the mask rule "
          f"{last_real_index(np.ones_like(trap)).tolist()}")

    title("token classification and multiple choice")
    tcfg, tbody, theads, tref = head_fixture("tokcls")
    th = tbody(tref["input_ids_right"], attention_mask=tref["attention_mask_right"]).last_hidden_state
    tags = th @ theads["classifier.weight"].T + theads["classifier.bias"]   # [b, t, c] -> [b, t, labels]
    print(f"token scores {tags.shape}; row 0 tags {tags[0].argmax(-1).tolist()}")
    dcfg, dbody, dheads, dref = head_fixture("double_heads")
    b, n_choices, t = dref["input_ids"].shape
    flat = lambda a: a.reshape(b * n_choices, t)                        # noqa: E731  each choice is a row
    dh = dbody(flat(dref["input_ids"]), attention_mask=flat(dref["attention_mask"]),
               token_type_ids=flat(dref["token_type_ids"])).last_hidden_state.reshape(b, n_choices, t, -1)
    picked = np.take_along_axis(dh, dref["mc_token_ids"][:, :, None, None], axis=2)[:, :, 0]   # [b, nc, c]
    mc = (picked @ dheads["multiple_choice_head.summary.weight"].T
          + dheads["multiple_choice_head.summary.bias"])[..., 0]        # [b, nc]
    print(f"mc_token_ids {dref['mc_token_ids'].tolist()} -> one score per choice\n{np.round(mc, 3)}; "
          f"best choice per row {mc.argmax(-1).tolist()}")

    title("checks (references: transformers, tests/fixtures/heads)")
    check("sequence scores, right padding + mask == transformers", right, ref["logits_right_mask"],
          tol=1e-5, relative=True)
    check("sequence scores, left padding + mask == transformers", left, ref["logits_left_mask"],
          tol=1e-5, relative=True)
    check("padded rows == each row alone (transformers)", right, ref["logits_rows_alone"], tol=1e-5, relative=True)
    check("trap: pad-id rule == transformers (pad_token_id = eos)", h[0, pad_rule] @ score.T,
          ref["logits_trap_pad_rule"], tol=1e-5, relative=True)
    check("trap: mask rule == transformers' last token", h[0, last_real_index(np.ones_like(trap))] @ score.T,
          ref["logits_trap_last_token"], tol=1e-5, relative=True)
    # scores at pad positions mean nothing (and differ between libraries): compare the real tokens
    real = tref["attention_mask_right"].astype(bool)
    check("token classification at real tokens == transformers", tags[real], tref["logits_right_mask"][real],
          tol=1e-5, relative=True)
    check("multiple-choice scores == transformers", mc, dref["mc_logits"], tol=1e-5, relative=True)
    from minigpt2.heads import GPT2ForSequenceClassification
    library = GPT2ForSequenceClassification.from_pretrained(FIXTURES_DIR.parent / "heads" / "seqcls", backend="numpy")
    check("sequence scores == minigpt2 GPT2ForSequenceClassification", left, library(
        ref["input_ids_left"], attention_mask=ref["attention_mask_left"]).logits, tol=1e-5, relative=True)
    check_equal("predicted labels agree with transformers", right.argmax(-1), ref["logits_right_mask"].argmax(-1))
    return 0


if __name__ == "__main__":
    run(main)
