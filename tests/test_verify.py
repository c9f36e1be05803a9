"""minigpt2.verify and `minigpt2 verify`: comparing our forward pass with transformers, place by place.

The committed fixture (tests/fixtures/verify/, made by tests/fixtures/make_verify_reference.py with
transformers) lets every check except the live ones run without torch. Expected values are
transformers' numbers or hand computation; "which place differs first" follows from which weight
the test changes.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt2 import verify, verify_report
from minigpt2.cli import main
from minigpt2.model import GPT2LMHeadModel
from minigpt2.weights.safetensors import load_file, save_file

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "verify"
MODEL = FIXTURE / "model"                    # 3 blocks, n_embd 24, vocab 96, random weights at O(1)
REFERENCE = FIXTURE / "reference.npz"        # transformers on MODEL, with traces
OTHER_MODEL = HERE / "fixtures" / "models" / "tiny"   # 2 blocks, n_embd 64: another config
BACKENDS = ["numpy", "numba"]
MLP_WEIGHT = "transformer.h.2.mlp.c_proj.weight"


def changed_copy(tmp_path, name=MLP_WEIGHT, delta=1.0):
    """A copy of MODEL with one weight changed, written with our safetensors writer."""
    folder = tmp_path / "changed"
    shutil.copytree(MODEL, folder)
    tensors = {key: np.array(value) for key, value in load_file(MODEL / "model.safetensors").items()}
    tensors[name][3, 5] += delta
    save_file(tensors, folder / "model.safetensors")
    return folder


def ids_of_reference():
    return verify.Reference.load(REFERENCE).input_ids


# ---- traces --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_trace_has_every_place_in_forward_order(backend):
    model = GPT2LMHeadModel.from_pretrained(MODEL, backend=backend)
    trace = {}
    out = model([[1, 2, 3]], trace=trace)
    names = verify.place_names(3)
    assert names[:8] == ["embed", "h.0.ln_1", "h.0.attn", "h.0.resid_1", "h.0.ln_2", "h.0.mlp",
                         "h.0.out", "h.1.ln_1"]
    assert names[-3:] == ["h.2.out", "ln_f", "logits"]
    assert [name for name in trace if name in names] == names          # insertion order = forward order
    assert trace["logits"] is out.logits
    # the two residuals, by hand
    for i in range(3):
        block_input = trace["embed"] if i == 0 else trace[f"h.{i - 1}.out"]
        np.testing.assert_allclose(trace[f"h.{i}.resid_1"], block_input + trace[f"h.{i}.attn"], rtol=1e-6)
        np.testing.assert_allclose(trace[f"h.{i}.out"], trace[f"h.{i}.resid_1"] + trace[f"h.{i}.mlp"],
                                   rtol=1e-6)


# ---- the comparison against the committed reference (no torch) -----------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_reference_passes(backend):
    report = verify.compare(MODEL, REFERENCE, backend=backend)
    assert report.passed
    assert [p.name for p in report.places] == verify.place_names(3)
    assert report.first_failure is None and report.last_fine.name == "logits"
    assert all(p.max_rel < 1e-5 and p.cosine > 0.99999 for p in report.places)
    assert report.top1 == 1.0 and report.top5 == 1.0 and report.n_positions == 12
    text = str(report)
    assert "h.2.resid_1" in text and "cosine sim" in text and text.endswith("PASS")


@pytest.mark.parametrize("backend", BACKENDS)
def test_changed_mlp_weight_is_found_in_block_2_mlp(tmp_path, backend):
    report = verify.compare(changed_copy(tmp_path), REFERENCE, backend=backend)
    assert not report.passed
    assert report.first_failure.name == "h.2.mlp"
    assert report.last_fine.name == "h.2.ln_2"
    assert report["h.2.resid_1"].ok and report["h.2.ln_2"].ok and report["h.1.out"].ok
    assert not report["h.2.out"].ok and not report["logits"].ok
    text = str(report)
    assert "first place over tolerance: h.2.mlp" in text and "last place still fine:      h.2.ln_2" in text
    assert text.endswith("FAIL")


def test_changed_attention_weight_is_found_in_block_1_attn(tmp_path):
    folder = changed_copy(tmp_path, "transformer.h.1.attn.c_attn.weight")
    report = verify.compare(folder, REFERENCE, backend="numpy")
    assert report.first_failure.name == "h.1.attn" and report.last_fine.name == "h.1.ln_1"


def test_changed_embedding_is_found_first(tmp_path):
    report = verify.compare(changed_copy(tmp_path, "transformer.wpe.weight"), REFERENCE, backend="numpy")
    assert report.first_failure.name == "embed" and report.last_fine is None
    assert "(none: the first place differs)" in str(report) and "wte / wpe" in str(report)


def test_model_object_and_reference_object(tmp_path):
    model = GPT2LMHeadModel.from_pretrained(MODEL, backend="numpy")
    reference = verify.Reference.load(REFERENCE)
    assert verify.compare(model, reference, input_ids=reference.input_ids).passed
    with pytest.raises(ValueError, match="needs the model as a folder"):
        verify.compare(model, "transformers", input_ids=[[1, 2]])


def test_tolerance_decides(tmp_path):
    """A change of 1e-3 in one MLP weight is over a 1e-6 tolerance and under a 1e-1 one."""
    folder = changed_copy(tmp_path, delta=1e-3)
    assert verify.compare(folder, REFERENCE, tolerance=1e-1, backend="numpy").passed
    strict = verify.compare(folder, REFERENCE, tolerance=1e-6, backend="numpy")
    assert strict.first_failure.name == "h.2.mlp"
    with pytest.raises(ValueError, match="tolerance"):
        verify.compare(MODEL, REFERENCE, tolerance=0)


def test_reference_without_traces_compares_hidden_states(tmp_path):
    reference = verify.Reference.load(REFERENCE)
    reference.traces = {}
    path = tmp_path / "no_traces.npz"
    reference.save(path)
    report = verify.compare(changed_copy(tmp_path), path, backend="numpy")
    # hidden_states hold the outputs of blocks 0 and 1 (block 2's is only seen through ln_f)
    assert [p.name for p in report.places] == ["embed", "h.0.out", "h.1.out", "ln_f", "logits"]
    assert report.first_failure.name == "ln_f" and report.last_fine.name == "h.1.out"
    assert "no traces" in str(report)


# ---- the measures, by hand -----------------------------------------------------------------

def test_diff_place_by_hand():
    ref = np.array([[1.0, -4.0], [2.0, 0.0]])
    ours = np.array([[1.0, -4.0], [2.5, 0.0]])
    d = verify.diff_place("x", ours, ref, tolerance=0.1)
    assert d.max_abs == 0.5 and d.max_rel == 0.5 / 4.0 and not d.ok
    assert d.cosine == pytest.approx((1 + 16 + 5) / (np.sqrt(21) * np.sqrt(1 + 16 + 6.25)))
    nan = verify.diff_place("x", np.array([np.nan, 1.0]), np.array([1.0, 1.0]), tolerance=1.0)
    assert not nan.ok and nan.max_rel == np.inf
    zero = verify.diff_place("x", np.zeros(3), np.zeros(3), tolerance=1e-9)
    assert zero.ok and zero.max_rel == 0.0 and zero.cosine == 1.0
    with pytest.raises(ValueError, match="shape"):
        verify.diff_place("x", np.zeros(3), np.zeros(4), tolerance=1.0)


def test_diff_place_in_chunks_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 7, 33))
    ours = ref + 1e-3 * rng.standard_normal(ref.shape)
    ours[1, 5, 2] += 0.5                                     # the largest difference, in a late chunk
    whole = verify.diff_place("x", ours, ref, 1e-2)
    monkeypatch.setattr(verify_report, "CHUNK_ELEMENTS", 40)        # 1 row of 33 per chunk
    chunked = verify.diff_place("x", ours, ref, 1e-2)
    assert chunked.max_abs == whole.max_abs == np.abs(ours - ref).max()
    assert chunked.max_rel == whole.max_rel and chunked.cosine == pytest.approx(whole.cosine, abs=1e-15)
    ours[0, 0, 0] = np.inf
    assert verify.diff_place("x", ours, ref, 1e-2).max_rel == np.inf


def test_top_k_agreement_by_hand():
    ref = np.array([[[9.0, 8, 7, 6, 5, 0, 0], [0, 0, 0, 0, 1, 2, 3]]])         # [1, 2, 7]
    ours = np.array([[[9.0, 8, 7, 6, 0, 5, 0], [0, 0, 0, 0, 1, 2, 3.5]]])
    assert verify.top_k_agreement(ours, ref, 1) == 1.0
    assert verify.top_k_agreement(ours, ref, 5) == 0.5        # row 0 swaps token 4 for token 5
    ours[0, 1, 0] = 10.0
    assert verify.top_k_agreement(ours, ref, 1) == 0.5


# ---- clear errors --------------------------------------------------------------------------

def test_reference_of_another_config_is_refused():
    with pytest.raises(ValueError, match=r"different model config: .*n_embd: 24 in .*, 64 in the model"):
        verify.compare(OTHER_MODEL, REFERENCE, backend="numpy")


def test_other_input_ids_are_refused():
    ids = ids_of_reference().copy()
    ids[0, 4] += 1
    with pytest.raises(ValueError, match=r"other input ids: at \[0, 4\]"):
        verify.compare(MODEL, REFERENCE, input_ids=ids, backend="numpy")
    with pytest.raises(ValueError, match=r"input ids of shape \(1, 12\), got \(1, 3\)"):
        verify.compare(MODEL, REFERENCE, input_ids=[1, 2, 3], backend="numpy")


def rewrite_reference(tmp_path, drop=(), **changes):
    with np.load(REFERENCE) as npz:
        arrays = {key: npz[key] for key in npz.files if key not in drop}
    arrays.update(changes)
    path = tmp_path / "edited.npz"
    np.savez(path, **arrays)
    return path


def test_broken_reference_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="missing key.*logits"):
        verify.Reference.load(rewrite_reference(tmp_path, drop=("logits",)))
    with pytest.raises(ValueError, match="traces are incomplete, missing trace/h.1.mlp"):
        verify.Reference.load(rewrite_reference(tmp_path, drop=("trace/h.1.mlp",)))
    with pytest.raises(ValueError, match="format version 99"):
        verify.Reference.load(rewrite_reference(tmp_path, format_version=np.int64(99)))
    with pytest.raises(ValueError, match=r"logits has shape \(1, 12, 95\)"):
        verify.Reference.load(rewrite_reference(tmp_path, logits=np.zeros((1, 12, 95), np.float32)))
    config = json.loads(str(np.load(REFERENCE)["config_json"]))
    with pytest.raises(ValueError, match=r"hidden_states has shape"):
        verify.Reference.load(rewrite_reference(
            tmp_path, config_json=np.array(json.dumps({**config, "n_layer": 4}))))
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(ValueError, match="not a reference .npz file"):
        verify.Reference.load(not_npz)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not a reference .npz file"):
        verify.Reference.load(npy)


def test_missing_transformers_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)          # import torch -> ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="needs the optional packages torch and transformers"):
        verify.reference_from_transformers(MODEL, [[1, 2, 3]])
    assert main(["verify", "--model", str(MODEL), "--ids", "1", "2", "--against", "transformers"]) == 1
    assert "pip install torch transformers" in capsys.readouterr().err
    # a saved reference needs neither
    assert verify.compare(MODEL, REFERENCE, backend="numpy").passed


# ---- the command ---------------------------------------------------------------------------

def test_cli_pass_fail_and_plot(tmp_path, capsys):
    plot = tmp_path / "errors.png"
    assert main(["verify", "--model", str(MODEL), "--reference", str(REFERENCE), "--backend", "numpy",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "h.1.ln_2" in out and "PASS" in out and f"plot: {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    changed = changed_copy(tmp_path)
    ids = [str(i) for i in ids_of_reference()[0]]
    plot2 = tmp_path / "fail.png"
    assert main(["verify", "--model", str(changed), "--ids", *ids, "--reference", str(REFERENCE),
                 "--backend", "numpy", "--tolerance", "1e-5", "--plot", str(plot2)]) == 1
    out = capsys.readouterr().out
    assert "first place over tolerance: h.2.mlp" in out and "tolerance: 1.0e-05" in out
    assert out.rstrip().splitlines()[-2] == "FAIL" and plot2.exists()


def test_cli_errors(tmp_path, capsys):
    base = ["verify", "--model", str(MODEL)]
    assert main(base + ["--reference", str(REFERENCE), "--ids", "1,2,x"]) == 1
    assert "'x' is not a token id" in capsys.readouterr().err
    assert main(base + ["--reference", str(REFERENCE), "--ids", "1", "2"]) == 1
    assert "input ids of shape" in capsys.readouterr().err
    assert main(["verify", "--model", str(OTHER_MODEL), "--reference", str(REFERENCE)]) == 1
    assert "different model config" in capsys.readouterr().err
    assert main(base + ["--reference", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    for usage_error in (base + ["--ids", "1"],                                   # compare with what?
                        base + ["--against", "transformers"],                   # which tokens?
                        base + ["--reference", str(REFERENCE), "--save-reference", "x.npz"]):
        with pytest.raises(SystemExit) as exit_info:
            main(usage_error)
        assert exit_info.value.code == 2
    capsys.readouterr()


# ---- live against transformers -------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A fresh random 3-block GPT-2 from transformers (weights at O(1), see hf_reference)."""
    pytest.importorskip("transformers")
    sys.path.insert(0, str(HERE))
    from hf_reference import build_hf_model

    folder = tmp_path_factory.mktemp("hf") / "model"
    spec = dict(vocab_size=128, n_positions=32, n_embd=32, n_head=4, n_layer=3)
    build_hf_model(spec, seed=3).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_transformers_passes(hf_folder, backend):
    ids = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]]
    report = verify.compare(hf_folder, "transformers", input_ids=ids, backend=backend)
    assert report.passed, str(report)
    assert report.n_positions == 16 and report.top1 == 1.0 and report.top5 == 1.0
    assert "transformers" in report.reference


def test_live_changed_copy_fails_at_block_2_mlp(hf_folder, tmp_path):
    ids = [[10, 20, 30, 40, 50, 60, 70]]
    reference = verify.reference_from_transformers(hf_folder, ids)
    folder = tmp_path / "changed"
    shutil.copytree(hf_folder, folder)
    tensors = {k: np.array(v) for k, v in load_file(folder / "model.safetensors").items()}
    tensors["transformer.h.2.mlp.c_fc.weight"][0, 0] += 0.5
    save_file(tensors, folder / "model.safetensors")
    report = verify.compare(folder, reference, input_ids=ids, backend="numpy")
    assert report.first_failure.name == "h.2.mlp" and report.last_fine.name == "h.2.ln_2"
    assert report["h.2.resid_1"].ok


def test_saved_reference_round_trips(hf_folder, tmp_path, monkeypatch, capsys):
    path = tmp_path / "ref.npz"
    assert main(["verify", "--model", str(hf_folder), "--ids", "5", "6", "7", "8",
                 "--save-reference", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    reference = verify.Reference.load(path)
    live = verify.reference_from_transformers(hf_folder, [[5, 6, 7, 8]])
    assert reference.input_ids.tolist() == [[5, 6, 7, 8]] and reference.source == live.source
    assert reference.config == live.config
    np.testing.assert_array_equal(reference.logits, live.logits)
    np.testing.assert_array_equal(reference.hidden_states, live.hidden_states)
    assert list(reference.traces) == verify.place_names(3)
    for name in reference.traces:
        np.testing.assert_array_equal(reference.traces[name], live.traces[name])
    # transformers' hidden states and its hooked block outputs agree with each other
    np.testing.assert_array_equal(reference.traces["h.1.out"], reference.hidden_states[2])
    # checked on a machine without torch
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["verify", "--model", str(hf_folder), "--reference", str(path), "--backend", "numpy"]) == 0


def test_cli_text_against_transformers(tmp_path, capsys):
    """--text goes through the GPT-2 tokenizer ("Hello world" -> [15496, 995], the HF docstring ids)."""
    pytest.importorskip("transformers")
    sys.path.insert(0, str(HERE))
    from hf_reference import build_hf_model

    folder = tmp_path / "full_vocab"
    spec = dict(vocab_size=50257, n_positions=16, n_embd=8, n_head=2, n_layer=1)
    build_hf_model(spec, seed=4).save_pretrained(folder)
    path = tmp_path / "ref.npz"
    assert main(["verify", "--model", str(folder), "--text", "Hello world", "--against", "transformers",
                 "--save-reference", str(path)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert verify.Reference.load(path).input_ids.tolist() == [[15496, 995]]


def test_numba_backend_against_numpy_backend():
    """Our own model as the reference: where would a kernel part from the plain NumPy ops?"""
    numpy_model = GPT2LMHeadModel.from_pretrained(MODEL, backend="numpy")
    reference = verify.reference_from_model(numpy_model, [[1, 2, 3, 4, 5]])
    assert reference.source == "minigpt2 (numpy backend)"
    report = verify.compare(MODEL, reference, backend="numba")
    assert report.passed and len(report.places) == len(verify.place_names(3))
