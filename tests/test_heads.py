"""The task heads against transformers: committed fixtures (no torch needed) and live cross-checks.

Each fixture in tests/fixtures/heads/ is a head model saved by transformers with random O(1)
weights, plus the outputs transformers computed (tests/fixtures/make_head_fixtures.py). Tolerance:
max |ours - theirs| / max |theirs| <= TOL on every logit array and LOSS_TOL on every loss, on both
backends: about 5x the worst error measured, so that one wrong constant in any op fails here.
"""

import contextlib
import functools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import minigpt2
from minigpt2 import heads
from minigpt2.config import GPT2Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_head_reference import HEAD_SPECS, LIVE_SPECS, SEQ_LABELS  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "heads"
LM_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny"
BACKENDS = ["numpy", "numba"]
# Worst relative errors measured over every check here, both backends (Zen 4, AVX-512): logits
# 6.5e-7 (check_seqcls_nopad rows_alone_right), losses 2.8e-6 (loss_first_row: one regression loss,
# a small number). Both bounds were 1e-5: a GELU coefficient of 0.0447 (for 0.044715) passed.
TOL = 3e-6
LOSS_TOL = 1.5e-5


def rel_err(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert np.isfinite(ours).all() and np.isfinite(theirs).all()
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@functools.lru_cache(maxsize=None)
def load(name, backend):
    return getattr(heads, HEAD_SPECS[name]["cls"]).from_pretrained(FIXTURES / name, backend=backend)


@functools.lru_cache(maxsize=None)
def reference(name):
    return dict(np.load(FIXTURES / name / "reference.npz"))


def hf_positions(ids):
    """transformers' default positions, 0..t-1 on every row (ids [..., t]).

    With a mask we count real tokens instead (so left padding works); the two differ only at the
    padding positions of right-padded rows, which the per-token outputs still include.
    """
    return np.broadcast_to(np.arange(ids.shape[-1]), ids.shape)


# ---- what each kind of head is checked on: returns {output name: relative error} -------------------

def check_seqcls(model, ref):
    ids_r, mask_r = ref["input_ids_right"], ref["attention_mask_right"]
    ids_l, mask_l = ref["input_ids_left"], ref["attention_mask_left"]
    float_labels = ref["labels_regression"]        # multi-label targets unless problem_type says otherwise
    err = {
        # pooled by pad id (no mask), as transformers
        "logits_right": rel_err(model(ids_r).logits, ref["logits_right"]),
        "logits_left": rel_err(model(ids_l).logits, ref["logits_left"]),
        # pooled by the mask; left-padded positions come from the mask (transformers needs them given)
        "logits_right_mask": rel_err(model(ids_r, attention_mask=mask_r).logits, ref["logits_right_mask"]),
        "logits_left_mask": rel_err(model(ids_l, attention_mask=mask_l).logits, ref["logits_left_mask"]),
        # a padded row scores as the same row alone
        "rows_alone_right": rel_err(model(ids_r, attention_mask=mask_r).logits, ref["logits_rows_alone"]),
        "rows_alone_left": rel_err(model(ids_l, attention_mask=mask_l).logits, ref["logits_rows_alone"]),
        "loss_multi": rel_err(model(ids_r, attention_mask=mask_r, labels=ref["labels_multi"]).loss,
                              ref["loss_multi"]),
        "loss_float_labels": rel_err(model(ids_r, attention_mask=mask_r, labels=float_labels).loss,
                                     ref["loss_float_labels"]),
        # the pad = eos trap: by pad id the trailing eos is skipped; by the mask it is the last token
        "trap_pad_rule": rel_err(model(ref["trap_ids"]).logits, ref["logits_trap_pad_rule"]),
        "trap_mask": rel_err(model(ref["trap_ids"], attention_mask=np.ones_like(ref["trap_ids"])).logits,
                             ref["logits_trap_last_token"]),
    }
    if "loss_single" in ref:
        err["loss_single"] = rel_err(model(ids_r, attention_mask=mask_r, labels=ref["labels_single"]).loss,
                                     ref["loss_single"])
    with problem_type(model.config, "regression"):
        err["loss_forced_regression"] = rel_err(model(ids_r, labels=ref["labels_regression"]).loss,
                                                ref["loss_forced_regression"])
    return err


@contextlib.contextmanager
def problem_type(config, value):
    """Set config.problem_type for a while (transformers 5 writes no problem_type key when None)."""
    config.problem_type = value
    try:
        yield
    finally:
        del config.problem_type


def check_seqcls_nopad(model, ref):
    ids_r, mask_r = ref["input_ids_right"], ref["attention_mask_right"]
    ids_l, mask_l = ref["input_ids_left"], ref["attention_mask_left"]
    labels = ref["labels_regression_1d"]
    with pytest.raises(ValueError, match="pad_token_id"):
        model(ids_r)                   # batch > 1, no mask, no pad id: transformers raises too
    # transformers can't batch this model at all; each row alone is its reference
    hand_mse = np.mean((ref["logits_rows_alone"][:, 0].astype(np.float64) - labels) ** 2)
    return {
        "rows_alone_right": rel_err(model(ids_r, attention_mask=mask_r).logits, ref["logits_rows_alone"]),
        "rows_alone_left": rel_err(model(ids_l, attention_mask=mask_l).logits, ref["logits_rows_alone"]),
        # one number alone can be near 0; judged on the scale of all rows' logits
        "first_row": rel_err(np.concatenate([model(ids_r[:1]).logits, ref["logits_rows_alone"]]),
                             np.concatenate([ref["logits_first_row"], ref["logits_rows_alone"]])),
        "loss_first_row": rel_err(model(ids_r[:1], labels=labels[:1]).loss, ref["loss_first_row"]),
        "loss_batch": rel_err(model(ids_r, attention_mask=mask_r, labels=labels).loss, hand_mse),
    }


def check_tokcls(model, ref):
    ids_r, mask_r, mask_l = ref["input_ids_right"], ref["attention_mask_right"], ref["attention_mask_left"]
    out = model(ids_r, attention_mask=mask_r, position_ids=hf_positions(ids_r), labels=ref["labels"])
    left = model(ref["input_ids_left"], attention_mask=mask_l).logits
    real = mask_l.astype(bool)         # padding positions are left out: nothing there to match
    return {
        "logits": rel_err(model(ids_r).logits, ref["logits"]),
        "logits_right_mask": rel_err(out.logits, ref["logits_right_mask"]),
        "loss": rel_err(out.loss, ref["loss"]),
        "logits_left_mask": rel_err(left[real], ref["logits_left_mask"][real]),
    }


def check_qa(model, ref):
    out = model(ref["input_ids"], attention_mask=ref["attention_mask"], token_type_ids=ref["token_type_ids"],
                position_ids=hf_positions(ref["input_ids"]), start_positions=ref["start_positions"],
                end_positions=ref["end_positions"])
    plain = model(ref["input_ids"])
    return {
        "start_logits": rel_err(out.start_logits, ref["start_logits"]),
        "end_logits": rel_err(out.end_logits, ref["end_logits"]),
        "loss": rel_err(out.loss, ref["loss"]),
        "start_logits_plain": rel_err(plain.start_logits, ref["start_logits_plain"]),
        "end_logits_plain": rel_err(plain.end_logits, ref["end_logits_plain"]),
    }


def check_double(model, ref):
    ids = ref["input_ids"]
    out = model(ids, attention_mask=ref["attention_mask"], token_type_ids=ref["token_type_ids"],
                position_ids=hf_positions(ids), mc_token_ids=ref["mc_token_ids"], labels=ref["labels"],
                mc_labels=ref["mc_labels"] if "mc_loss" in ref else None)
    left = model(ref["input_ids_left"], attention_mask=ref["attention_mask_left"])
    real = ref["attention_mask_left"].astype(bool)
    err = {
        "logits": rel_err(out.logits, ref["logits"]),
        "loss": rel_err(out.loss, ref["loss"]),
        "mc_logits": rel_err(out.mc_logits, ref["mc_logits"]),
        "mc_logits_default": rel_err(model(ids).mc_logits, ref["mc_logits_default"]),
        "logits_left": rel_err(left.logits[real], ref["logits_left"][real]),
    }
    # left padding: a padding position sees no token at all; its hidden state is ours alone (zero
    # attention) and enters a "mean" or "first" summary, so only "last" / "cls_index" can match there
    if model.config.summary_type not in ("mean", "first"):
        err["mc_logits_left"] = rel_err(left.mc_logits, ref["mc_logits_left"])
    if "mc_loss" in ref:
        err["mc_loss"] = rel_err(out.mc_loss, ref["mc_loss"])
    return err


CHECKS = {"seqcls": check_seqcls, "seqcls_nopad": check_seqcls_nopad, "tokcls": check_tokcls,
          "qa": check_qa, "double": check_double}


def assert_all_close(errors):
    bad = {k: e for k, e in errors.items() if not e <= (LOSS_TOL if "loss" in k else TOL)}
    assert not bad, f"relative errors above {TOL} (losses: {LOSS_TOL}): {bad}"


# ---- the committed fixtures --------------------------------------------------------------------------

def test_fixtures_exist():
    assert set(HEAD_SPECS) <= {p.name for p in FIXTURES.iterdir() if (p / "reference.npz").exists()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(HEAD_SPECS))
def test_head_matches_transformers(name, backend):
    model, ref = load(name, backend), reference(name)
    assert model.backend == backend
    assert_all_close(CHECKS[HEAD_SPECS[name]["kind"]](model, ref))


def test_outputs_are_float32_with_hf_shapes():
    ids = reference("seqcls")["input_ids_right"]
    b, t = ids.shape
    out = load("seqcls", "numpy")(ids, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (b, 3) and out.logits.dtype == np.float32
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    qa = load("qa", "numpy")(ids)
    assert qa.start_logits.shape == qa.end_logits.shape == (b, t) and qa.start_logits.dtype == np.float32
    tok = load("tokcls", "numpy")(ids)
    assert tok.logits.shape == (b, t, 5) and tok.loss is None
    ref = reference("double_heads")
    dh = load("double_heads", "numpy")(ref["input_ids"], output_hidden_states=True)
    assert dh.logits.shape == (2, 3, 7, 512) and dh.mc_logits.shape == (2, 3)
    assert dh.hidden_states[-1].shape == (2, 3, 7, 48) and dh.loss is None and dh.mc_loss is None
    wide = load("double_heads_summary", "numpy")(ref["input_ids"])
    assert wide.mc_logits.shape == (2, 3, 32)          # summary_proj_to_labels=False: n_embd per choice


def test_labels_carried_on_config():
    model = load("seqcls", "numpy")
    assert model.config.id2label == SEQ_LABELS
    assert model.config.label2id == {v: k for k, v in SEQ_LABELS.items()}
    assert model.num_labels == 3 and model.config.pad_token_id == 0
    ref = reference("seqcls")
    pred = model(ref["input_ids_right"], attention_mask=ref["attention_mask_right"]).logits.argmax(-1)
    assert [model.config.id2label[int(i)] for i in pred] == \
        [SEQ_LABELS[int(i)] for i in ref["logits_right_mask"].argmax(-1)]


def test_pad_eos_trap():
    """pad_token_id = eos_token_id: a text ending in a real eos is read one token early without a mask."""
    model, ref = load("seqcls", "numpy"), reference("seqcls")
    trap = ref["trap_ids"]
    assert model.config.pad_token_id == model.config.eos_token_id == trap[0, -1]
    assert not np.allclose(ref["logits_trap_pad_rule"], ref["logits_trap_last_token"])   # the two differ
    by_pad_id = model(trap).logits
    by_mask = model(trap, attention_mask=np.ones_like(trap)).logits
    shorter = model(trap[:, :-1]).logits                     # the text without its eos
    assert rel_err(by_pad_id, shorter) <= TOL and rel_err(by_mask, ref["logits_trap_last_token"]) <= TOL


def test_double_heads_lm_head_is_tied_or_loaded():
    tied = load("double_heads", "numpy")
    assert tied.lm_head.weight is tied.transformer.wte.weight                 # the same array, no copy
    untied = load("double_heads_summary", "numpy")
    assert not np.shares_memory(untied.lm_head.weight, untied.transformer.wte.weight)


def test_sequence_classification_with_kv_cache():
    """Prefill, then the rest through the cache: the same pooled logits as one full pass."""
    model, ref = load("seqcls", "numba"), reference("seqcls")
    ids, mask = ref["input_ids_left"], ref["attention_mask_left"]
    first = model(ids[:, :5], attention_mask=mask[:, :5], use_cache=True)
    rest = model(ids[:, 5:], past_key_values=first.past_key_values, attention_mask=mask, use_cache=True)
    assert rel_err(rest.logits, ref["logits_left_mask"]) <= TOL


def test_double_heads_with_kv_cache_and_embeddings():
    model, ref = load("double_heads", "numba"), reference("double_heads")
    ids = ref["input_ids"]
    full = model(ids)
    first = model(ids[..., :4], use_cache=True)                  # the cache holds b * num_choices rows
    rest = model(ids[..., 4:], past_key_values=first.past_key_values, use_cache=True)
    assert rel_err(rest.logits, full.logits[..., 4:, :]) <= TOL
    assert rel_err(rest.mc_logits, ref["mc_logits_default"]) <= TOL
    embedded = model(inputs_embeds=model.transformer.wte.weight[ids])    # [b, nc, t, c]
    assert rel_err(embedded.mc_logits, ref["mc_logits_default"]) <= TOL


def test_sequence_classification_from_embeddings():
    model, ref = load("seqcls", "numpy"), reference("seqcls")
    ids, mask = ref["input_ids_left"], ref["attention_mask_left"]
    embeds = model.transformer.wte.weight[ids]
    assert rel_err(model(inputs_embeds=embeds, attention_mask=mask).logits, ref["logits_left_mask"]) <= TOL
    # no mask: embeddings show no pad ids, so the last position is read, as transformers does
    assert rel_err(model(inputs_embeds=embeds).logits, ref["logits_left"]) <= TOL


def test_loss_choice_and_edge_cases():
    model, ref = load("seqcls", "numpy"), reference("seqcls")
    ids, mask = ref["input_ids_right"], ref["attention_mask_right"]
    logits = model(ids, attention_mask=mask).logits.astype(np.float64)
    # bool labels are not integers for transformers either: multi-label
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], bool)
    expected = np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))
    assert rel_err(model(ids, attention_mask=mask, labels=labels).loss, expected) <= TOL
    # [b, 1] int labels are accepted for [b] (transformers' view(-1))
    single = ref["labels_single"]
    assert model(ids, attention_mask=mask, labels=single[:, None]).loss == \
        model(ids, attention_mask=mask, labels=single).loss


def test_qa_loss_edge_cases():
    model, ref = load("qa", "numpy"), reference("qa")
    ids = ref["input_ids"]
    out = model(ids, start_positions=[0, 1, 2, 3], end_positions=[1, 2, 3, 4])
    logp = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))      # noqa: E731  (logits are O(1))
    rows = np.arange(4)
    expected = -(logp(out.start_logits.astype(np.float64))[rows, [0, 1, 2, 3]].mean()
                 + logp(out.end_logits.astype(np.float64))[rows, [1, 2, 3, 4]].mean()) / 2
    assert rel_err(out.loss, expected) <= TOL
    # every position past the input: all ignored, NaN as in torch
    assert np.isnan(model(ids, start_positions=[99] * 4, end_positions=[99] * 4).loss)


# ---- bad input and bad checkpoints are ValueErrors that say what is wrong --------------------------

@pytest.mark.parametrize("cls, tensor", [("GPT2ForSequenceClassification", "score.weight"),
                                          ("GPT2ForTokenClassification", "classifier.weight"),
                                          ("GPT2ForQuestionAnswering", "qa_outputs.weight"),
                                          ("GPT2DoubleHeadsModel", "multiple_choice_head.summary.weight")])
def test_missing_head_tensor(cls, tensor):
    with pytest.raises(ValueError, match=f"model.safetensors: missing tensor '{tensor}'"):
        getattr(heads, cls).from_pretrained(LM_FIXTURE, backend="numpy")     # an LM-head checkpoint


def test_head_tensor_of_wrong_shape(tmp_path):
    folder = tmp_path / "two_labels"
    shutil.copytree(FIXTURES / "seqcls", folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}                  # the checkpoint has 3 labels
    config["label2id"] = {"no": 0, "yes": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'score.weight' has shape \[3, 48\], expected \[2, 48\]"):
        heads.GPT2ForSequenceClassification.from_pretrained(folder, backend="numpy")


def test_bad_inputs():
    seq, ref = load("seqcls", "numpy"), reference("seqcls")
    ids, mask = ref["input_ids_right"], ref["attention_mask_right"]
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        seq(ids, attention_mask=mask, labels=[0, 1, 3, 0])
    with pytest.raises(ValueError, match=r"labels for multi_label_classification must have shape \(4, 3\)"):
        seq(ids, labels=np.zeros((4, 2), np.float32))
    with problem_type(seq.config, "classification"), pytest.raises(ValueError, match="problem_type"):
        seq(ids, labels=[0, 1, 2, 0])
    tok = load("tokcls", "numpy")
    with pytest.raises(ValueError, match=r"labels must have shape \(4, 8\)"):
        tok(ids, labels=np.zeros((8, 4), np.int64))
    qa = load("qa", "numpy")
    with pytest.raises(ValueError, match="both start_positions and end_positions"):
        qa(ids, start_positions=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="start_positions must be integers"):
        qa(ids, start_positions=[0.5] * 4, end_positions=[0] * 4)
    dh, dref = load("double_heads", "numpy"), reference("double_heads")
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, num_choices, seq\]"):
        dh(ids)
    with pytest.raises(ValueError, match="mc_token_ids must be in 0..6"):
        dh(dref["input_ids"], mc_token_ids=[[0, 1, 7], [0, 0, 0]])
    with pytest.raises(ValueError, match="attention_mask must be"):
        dh(dref["input_ids"], attention_mask=np.ones((2, 7)))
    with pytest.raises(ValueError, match="mc_labels must be in 0..2"):
        dh(dref["input_ids"], mc_labels=[0, 3])


@pytest.mark.parametrize("field, value, message", [("summary_type", "attn", "summary_type"),
                                                   ("summary_activation", "softsign", "summary_activation")])
def test_bad_summary_config(field, value, message):
    config = GPT2Config.from_pretrained(FIXTURES / "double_heads", **{field: value})
    weights = dict(minigpt2.weights.safetensors.load_file(FIXTURES / "double_heads" / "model.safetensors"))
    with pytest.raises(ValueError, match=message):
        heads.GPT2DoubleHeadsModel(config, weights, backend="numpy")


def test_public_names():
    for name in ("GPT2ForSequenceClassification", "GPT2ForTokenClassification", "GPT2ForQuestionAnswering",
                 "GPT2DoubleHeadsModel"):
        assert getattr(minigpt2, name) is getattr(heads, name)


# ---- live: fresh models from transformers, including summary variants not committed ----------------

@pytest.mark.parametrize("name", sorted(HEAD_SPECS) + sorted(LIVE_SPECS))
def test_live_against_transformers(name, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from hf_head_reference import write_fixture

    spec = {**HEAD_SPECS, **LIVE_SPECS}[name]
    write_fixture(tmp_path, spec, seed=1000 + len(name))
    ref = dict(np.load(tmp_path / "reference.npz"))
    for backend in BACKENDS:
        model = getattr(heads, spec["cls"]).from_pretrained(tmp_path, backend=backend)
        assert_all_close(CHECKS[spec["kind"]](model, ref))
