"""Checkpoint loading: key prefixes, ignored buffers, tied head, dtypes, shards, zero copy, the hub."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minigpt2.weights.checkpoints import expected_body_shapes, load_weights, split_body_and_heads
from minigpt2.config import GPT2Config
from minigpt2.model import GPT2LMHeadModel, GPT2Model
from minigpt2.weights.safetensors import float32_to_bfloat16, bfloat16_to_float32, load_file, save_file

TINY = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny"


def copy_with(tmp_path, tensors, metadata=None, **save_kwargs):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder / "config.json")
    save_file(tensors, folder / "model.safetensors", metadata, **save_kwargs)
    return folder


def tiny_tensors():
    return {k: np.array(v) for k, v in load_file(TINY / "model.safetensors").items()}


def reference_logits():
    return np.load(TINY / "reference.npz")["logits"], np.load(TINY / "reference.npz")["input_ids"]


def test_fixture_uses_prefixed_keys_and_unprefixed_work_too(tmp_path):
    tensors = tiny_tensors()
    assert all(k.startswith("transformer.") for k in tensors)      # transformers 5 save_pretrained
    unprefixed = {k[len("transformer."):]: v for k, v in tensors.items()}   # the hub's layout
    folder = copy_with(tmp_path, unprefixed)
    logits, ids = reference_logits()
    out = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")(ids).logits
    assert np.abs(out - logits).max() / np.abs(logits).max() <= 1e-5


def test_buffers_are_ignored_and_keys_never_counted(tmp_path):
    tensors = tiny_tensors()
    tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    tensors["h.1.attn.masked_bias"] = np.array(-1e4, np.float32)
    tensors["score.weight"] = np.ones((2, 64), np.float32)               # a head someone else uses
    body, heads = load_weights(copy_with(tmp_path, tensors), GPT2Config.from_pretrained(TINY))
    assert set(body) == set(expected_body_shapes(GPT2Config.from_pretrained(TINY)))
    assert set(heads) == {"score.weight"}
    assert "h.0.attn.c_attn.bias" in body                            # not mistaken for a buffer


def test_duplicate_prefixed_and_unprefixed_is_an_error():
    w = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="both with and without"):
        split_body_and_heads({"transformer.ln_f.bias": w, "ln_f.bias": w})


def test_tied_head_is_wte_without_copy_and_weights_are_memory_mapped():
    model = GPT2LMHeadModel.from_pretrained(TINY, backend="numpy")
    assert model.lm_head.weight is model.transformer.wte.weight
    base = model.transformer.h[0].attn.c_attn.weight
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)                               # F32 weights: no copy at load


def test_untied_lm_head_is_used(tmp_path):
    tensors = tiny_tensors()
    head = np.random.default_rng(0).standard_normal(tensors["transformer.wte.weight"].shape).astype(np.float32)
    tensors["lm_head.weight"] = head
    folder = copy_with(tmp_path, tensors)
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    ids = np.array([[1, 2, 3]])
    h = model.transformer(ids).last_hidden_state
    np.testing.assert_allclose(model(ids).logits, h @ head.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("storage", ["F16", "BF16"])
def test_low_precision_files_become_float32(tmp_path, storage):
    tensors = tiny_tensors()
    if storage == "F16":
        stored = {k: v.astype(np.float16) for k, v in tensors.items()}
        folder = copy_with(tmp_path, stored)
        exact = {k: v.astype(np.float32) for k, v in stored.items()}
    else:
        folder = copy_with(tmp_path, tensors, bf16=list(tensors))
        exact = {k: bfloat16_to_float32(float32_to_bfloat16(v)) for k, v in tensors.items()}
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    assert model.transformer.wte.weight.dtype == np.float32
    expected = GPT2LMHeadModel(GPT2Config.from_pretrained(TINY), exact, backend="numpy")
    ids = np.array([[4, 8, 15, 16, 23, 42]])
    np.testing.assert_array_equal(model(ids).logits, expected(ids).logits)


def test_bf16_checkpoint_written_by_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(TINY).eval()
    hf = hf.to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    hf = hf.float()                                    # the bf16 values, computed in float32
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    ours = GPT2LMHeadModel.from_pretrained(tmp_path, backend="numpy")(ids).logits
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-5


def test_sharded_checkpoint(tmp_path):
    tensors = tiny_tensors()
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    logits, ids = reference_logits()
    out = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")(ids).logits
    assert np.abs(out - logits).max() / np.abs(logits).max() <= 1e-5


def test_body_from_a_dict_for_other_heads():
    config = GPT2Config.from_pretrained(TINY)
    body, heads = load_weights(TINY, config)
    assert heads == {} and "wte.weight" in body
    model = GPT2Model(config, body, backend="numpy")
    out = model([[1, 2, 3]], output_hidden_states=True)
    assert out.last_hidden_state.shape == (1, 3, 64) and len(out.hidden_states) == 3


def test_names_go_through_the_hub(monkeypatch):
    import minigpt2.weights.hub
    calls = []

    def fake_resolve(name, cache_dir=None, local_files_only=False):
        calls.append((name, cache_dir, local_files_only))
        return TINY

    monkeypatch.setattr(minigpt2.weights.hub, "resolve_model_folder", fake_resolve)
    model = GPT2LMHeadModel.from_pretrained("someone/tiny", backend="numpy", cache_dir="/x",
                                            local_files_only=True)
    assert calls == [("someone/tiny", "/x", True)] and model.config.n_layer == 2
