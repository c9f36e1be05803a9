"""Random GPT-2 head models built by transformers, and what they compute: the oracle of test_heads.py.

Used by tests/fixtures/make_head_fixtures.py (the committed fixtures) and by the live checks in
test_heads.py (when transformers is importable). Needs torch + transformers; the library never
imports this.

Every spec names a transformers class and a "kind" (which inputs to make and which outputs to
record); ``head_inputs(kind, config, seed)`` and ``head_outputs(kind, model, inputs)`` return
plain dicts of NumPy arrays, saved as reference.npz.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from hf_reference import spread_weights

# Small vocab and context keep the fixtures small; eos = bos = 0, and the sequence-classification
# model uses pad = eos = 0, the usual GPT-2 setting (and its trap).
COMMON = dict(vocab_size=512, n_positions=32, bos_token_id=0, eos_token_id=0)
SEQ_LABELS = {0: "negative", 1: "neutral", 2: "positive"}

HEAD_SPECS = {        # committed as tests/fixtures/heads/<name>/
    "seqcls": dict(cls="GPT2ForSequenceClassification", kind="seqcls",
                   config=dict(n_layer=2, n_embd=48, n_head=3, pad_token_id=0, id2label=SEQ_LABELS,
                               label2id={v: k for k, v in SEQ_LABELS.items()})),
    "seqcls_nopad": dict(cls="GPT2ForSequenceClassification", kind="seqcls_nopad",
                         config=dict(n_layer=1, n_embd=32, n_head=4, num_labels=1,
                                     activation_function="gelu")),
    "tokcls": dict(cls="GPT2ForTokenClassification", kind="tokcls",
                   config=dict(n_layer=2, n_embd=40, n_head=5, n_inner=72, num_labels=5)),
    "qa": dict(cls="GPT2ForQuestionAnswering", kind="qa",
               config=dict(n_layer=2, n_embd=36, n_head=3, scale_attn_by_inverse_layer_idx=True)),
    "double_heads": dict(cls="GPT2DoubleHeadsModel", kind="double",
                         config=dict(n_layer=2, n_embd=48, n_head=3)),
    "double_heads_summary": dict(cls="GPT2DoubleHeadsModel", kind="double",
                                 config=dict(n_layer=1, n_embd=32, n_head=2, summary_type="mean",
                                             summary_activation="tanh", summary_proj_to_labels=False,
                                             tie_word_embeddings=False)),
}
LIVE_SPECS = {        # checked only where transformers is installed
    "seqcls_regression_from_config": dict(
        cls="GPT2ForSequenceClassification", kind="seqcls",
        config=dict(n_layer=1, n_embd=24, n_head=3, pad_token_id=0, num_labels=3, problem_type="regression")),
    "seqcls_multi_label_from_config": dict(
        cls="GPT2ForSequenceClassification", kind="seqcls",
        config=dict(n_layer=1, n_embd=24, n_head=2, pad_token_id=0, num_labels=3,
                    problem_type="multi_label_classification")),
    "double_heads_last_tanh": dict(cls="GPT2DoubleHeadsModel", kind="double",
                                   config=dict(n_layer=1, n_embd=24, n_head=3, summary_type="last",
                                               summary_activation="tanh")),
    "double_heads_first_noproj": dict(cls="GPT2DoubleHeadsModel", kind="double",
                                      config=dict(n_layer=1, n_embd=24, n_head=2, summary_type="first",
                                                  summary_use_proj=False)),
    "double_heads_cls_relu_wide": dict(cls="GPT2DoubleHeadsModel", kind="double",
                                       config=dict(n_layer=1, n_embd=24, n_head=4, summary_activation="relu",
                                                   summary_proj_to_labels=False)),
}


def build_hf_head_model(spec, seed=0):
    """A transformers head model with random O(1)-scale weights (init std 0.02 would hide errors)."""
    import torch
    import transformers

    config = transformers.GPT2Config(**{**COMMON, **spec["config"]})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, spec["cls"])(config).eval()
    spread_weights(model)
    return model


def write_fixture(folder, spec, seed):
    """Save the model of ``spec`` (transformers' save_pretrained) and its reference.npz into ``folder``."""
    import torch
    import transformers

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    model = build_hf_head_model(spec, seed=seed)
    model.save_pretrained(folder)
    inputs = head_inputs(spec["kind"], model.config, seed=seed)
    outputs = head_outputs(spec["kind"], model, inputs)
    versions = json.dumps({"transformers": transformers.__version__, "torch": torch.__version__})
    np.savez_compressed(folder / "reference.npz", **inputs, **outputs, versions=np.array(versions))
    for extra in folder.iterdir():                    # keep only what the tests read
        if extra.name not in ("config.json", "model.safetensors", "reference.npz"):
            extra.unlink()


# ---- inputs ---------------------------------------------------------------------------------------

def _padded(rng, vocab_size, lengths, seq_len, pad_id=0):
    """Rows of random real tokens (never pad_id) padded to seq_len, right and left.

    Returns ids_right, mask_right, ids_left, mask_left, position_ids_left ([len(lengths), seq_len]).
    """
    n = len(lengths)
    ids_right = np.full((n, seq_len), pad_id, np.int64)
    ids_left = ids_right.copy()
    for row, length in enumerate(lengths):
        tokens = rng.integers(1, vocab_size, length)
        ids_right[row, :length] = tokens
        ids_left[row, seq_len - length:] = tokens
    mask_right = (np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    mask_left = mask_right[:, ::-1].copy()
    position_ids_left = np.maximum(np.cumsum(mask_left, axis=1) - 1, 0)
    return ids_right, mask_right, ids_left, mask_left, position_ids_left


def head_inputs(kind, config, seed=0):
    rng = np.random.default_rng(seed)
    v = config.vocab_size
    if kind in ("seqcls", "seqcls_nopad"):
        lengths = [8, 5, 3, 6] if kind == "seqcls" else [7, 4, 6]
        ids_r, mask_r, ids_l, mask_l, pos_l = _padded(rng, v, lengths, max(lengths))
        n = config.num_labels
        b = len(lengths)
        labels_single = rng.integers(0, n, b)
        labels_single[-1] = -100                                  # ignored
        trap = rng.integers(1, v, (1, 6))
        trap[0, -1] = 0                                           # a real eos at the end, pad id = eos id
        return dict(input_ids_right=ids_r, attention_mask_right=mask_r, input_ids_left=ids_l,
                    attention_mask_left=mask_l, position_ids_left=pos_l, lengths=np.array(lengths),
                    labels_single=labels_single,
                    labels_multi=rng.choice([0.0, 0.25, 1.0], (b, n)).astype(np.float32),
                    labels_regression=rng.standard_normal((b, n)).astype(np.float32),
                    labels_regression_1d=rng.standard_normal(b).astype(np.float32),
                    trap_ids=trap)
    if kind == "tokcls":
        lengths = [9, 6, 4]
        ids_r, mask_r, ids_l, mask_l, pos_l = _padded(rng, v, lengths, 9)
        labels = rng.integers(0, config.num_labels, ids_r.shape)
        labels[mask_r == 0] = -100
        labels[0, 2] = -100
        return dict(input_ids_right=ids_r, attention_mask_right=mask_r, input_ids_left=ids_l,
                    attention_mask_left=mask_l, position_ids_left=pos_l, labels=labels)
    if kind == "qa":
        ids_r, mask_r, *_ = _padded(rng, v, [8, 8, 5, 7], 8)
        return dict(input_ids=ids_r, attention_mask=mask_r,
                    start_positions=np.array([1, 3, 20, 0]),              # 20: past the input, ignored
                    end_positions=np.array([[2], [7], [5], [-3]]),        # [b, 1]; -3 clamps to 0
                    token_type_ids=rng.integers(0, v, ids_r.shape))
    if kind == "double":
        b, n_choices, t = 2, 3, 7
        lengths = np.array([[7, 5, 6], [4, 7, 3]])
        ids_r, mask_r, ids_l, mask_l, pos_l = _padded(rng, v, lengths.reshape(-1), t)
        shape = (b, n_choices, t)
        labels = ids_r.copy()
        labels[mask_r == 0] = -100
        return dict(input_ids=ids_r.reshape(shape), attention_mask=mask_r.reshape(shape),
                    input_ids_left=ids_l.reshape(shape), attention_mask_left=mask_l.reshape(shape),
                    position_ids_left=pos_l.reshape(shape), mc_token_ids=lengths - 1,
                    token_type_ids=rng.integers(0, v, shape), labels=labels.reshape(shape),
                    mc_labels=np.array([1, 2]))
    raise ValueError(kind)


# ---- outputs ----------------------------------------------------------------------------------------

def head_outputs(kind, model, inputs):
    """What transformers computes for ``inputs`` (float32 arrays; losses as 0-d arrays)."""
    import torch

    T = lambda a: torch.from_numpy(np.ascontiguousarray(a))       # noqa: E731
    N = lambda t: t.detach().numpy().astype(np.float32)            # noqa: E731
    cfg = model.config
    out = {}
    with torch.no_grad():
        if kind in ("seqcls", "seqcls_nopad"):
            problem_type = cfg.problem_type

            def loss(ids, labels, **kw):
                cfg.problem_type = problem_type          # transformers writes its choice into the config
                return N(model(T(ids), labels=T(labels), **kw).loss)

            rows = [inputs["input_ids_right"][i:i + 1, :n] for i, n in enumerate(inputs["lengths"])]
            out["logits_rows_alone"] = np.concatenate([N(model(T(r)).logits) for r in rows])
            if kind == "seqcls":
                ids, mask = inputs["input_ids_right"], inputs["attention_mask_right"]
                out["logits_right"] = N(model(T(ids)).logits)
                out["logits_right_mask"] = N(model(T(ids), attention_mask=T(mask)).logits)
                out["logits_left"] = N(model(T(inputs["input_ids_left"])).logits)
                out["logits_left_mask"] = N(model(T(inputs["input_ids_left"]),
                                                  attention_mask=T(inputs["attention_mask_left"]),
                                                  position_ids=T(inputs["position_ids_left"])).logits)
                if problem_type is None:     # int labels make no sense for a regression/multi-label config
                    out["loss_single"] = loss(ids, inputs["labels_single"], attention_mask=T(mask))
                out["loss_multi"] = loss(ids, inputs["labels_multi"], attention_mask=T(mask))
                out["loss_float_labels"] = loss(ids, inputs["labels_regression"], attention_mask=T(mask))
                cfg.problem_type = "regression"          # forced, as a config.json may say
                out["loss_forced_regression"] = N(model(T(ids), labels=T(inputs["labels_regression"])).loss)
                cfg.problem_type = problem_type
                out["logits_trap_pad_rule"] = N(model(T(inputs["trap_ids"])).logits)
                pad, cfg.pad_token_id = cfg.pad_token_id, None   # batch of 1, no pad id: the last token
                out["logits_trap_last_token"] = N(model(T(inputs["trap_ids"])).logits)
                cfg.pad_token_id = pad
            else:
                row = inputs["input_ids_right"][:1]                               # the full-length row
                out["logits_first_row"] = N(model(T(row)).logits)
                out["loss_first_row"] = loss(row, inputs["labels_regression_1d"][:1])
        elif kind == "tokcls":
            ids, mask = inputs["input_ids_right"], inputs["attention_mask_right"]
            out["logits"] = N(model(T(ids)).logits)
            full = model(T(ids), attention_mask=T(mask), labels=T(inputs["labels"]))
            out["logits_right_mask"], out["loss"] = N(full.logits), N(full.loss)
            out["logits_left_mask"] = N(model(T(inputs["input_ids_left"]),
                                              attention_mask=T(inputs["attention_mask_left"]),
                                              position_ids=T(inputs["position_ids_left"])).logits)
        elif kind == "qa":
            full = model(T(inputs["input_ids"]), attention_mask=T(inputs["attention_mask"]),
                         token_type_ids=T(inputs["token_type_ids"]),
                         start_positions=T(inputs["start_positions"]),
                         end_positions=T(inputs["end_positions"]))
            out["start_logits"], out["end_logits"], out["loss"] = (N(full.start_logits), N(full.end_logits),
                                                                    N(full.loss))
            plain = model(T(inputs["input_ids"]))
            out["start_logits_plain"], out["end_logits_plain"] = N(plain.start_logits), N(plain.end_logits)
        elif kind == "double":
            out.update(_double_heads_outputs(model, inputs, T, N))
        else:
            raise ValueError(kind)
    return out


def _double_heads_outputs(model, inputs, T, N):
    """LM logits/loss from transformers' forward; mc_logits from its GPT2SequenceSummary.

    For summary_type "cls_index" (the GPT-2 default) the forward's mc_logits/mc_loss are recorded.
    For "last" / "first" / "mean" the forward applies the summary to the 4-D [b, nc, t, c] states,
    where hidden[:, -1] picks a choice, not a token; so the reference is the same summary module
    applied to each choice's [t, c] states, the way the module is documented to work.
    """
    import torch

    cfg = model.config
    b, n_choices, t = inputs["input_ids"].shape
    flat = lambda a: T(a.reshape(b * n_choices, *a.shape[2:]))     # noqa: E731
    kw = dict(attention_mask=T(inputs["attention_mask"]), token_type_ids=T(inputs["token_type_ids"]))
    out = {}
    # mc_labels only for one score per choice from "cls_index": otherwise transformers' mc_loss fails
    one_score = cfg.summary_type == "cls_index" and cfg.summary_use_proj and cfg.summary_proj_to_labels
    mc_labels = T(inputs["mc_labels"]) if one_score else None
    full = model(T(inputs["input_ids"]), mc_token_ids=T(inputs["mc_token_ids"]), labels=T(inputs["labels"]),
                 mc_labels=mc_labels, **kw)
    out["logits"], out["loss"] = N(full.logits), N(full.loss)
    # transformers 5 does not reshape position_ids [b, nc, t] itself: pass them flat
    left = dict(attention_mask=T(inputs["attention_mask_left"]),
                position_ids=flat(inputs["position_ids_left"]))
    out["logits_left"] = N(model(T(inputs["input_ids_left"]), **left).logits)

    def per_choice(ids, mc_token_ids, **kw):
        """kw: [b, nc, t] arrays (attention_mask, token_type_ids, position_ids) -> mc logits per choice."""
        flat_kw = {k: flat(a) for k, a in kw.items()}
        hidden = model.transformer(flat(ids), **flat_kw).last_hidden_state          # [b * nc, t, c]
        cls = None if mc_token_ids is None else flat(mc_token_ids)
        mc = model.multiple_choice_head(hidden, cls).reshape(b, n_choices, -1)       # [b, nc, k]
        return mc[..., 0] if mc.shape[-1] == 1 else mc

    out["mc_logits"] = N(per_choice(inputs["input_ids"], inputs["mc_token_ids"],
                                    attention_mask=inputs["attention_mask"],
                                    token_type_ids=inputs["token_type_ids"]))
    out["mc_logits_default"] = N(per_choice(inputs["input_ids"], None))
    out["mc_logits_left"] = N(per_choice(inputs["input_ids_left"], None,
                                         attention_mask=inputs["attention_mask_left"],
                                         position_ids=inputs["position_ids_left"]))
    if cfg.summary_type == "cls_index":                 # the forward itself is right: check we agree with it
        assert np.allclose(N(full.mc_logits), out["mc_logits"], rtol=1e-6, atol=1e-6)
        if full.mc_loss is not None:
            out["mc_loss"] = N(full.mc_loss)
    if out["mc_logits"].ndim == 2 and "mc_loss" not in out:
        out["mc_loss"] = N(torch.nn.functional.cross_entropy(torch.from_numpy(out["mc_logits"]),
                                                             T(inputs["mc_labels"])))
    return out
