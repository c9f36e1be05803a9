"""Bad input gives a ValueError that says what is wrong (never a deep NumPy traceback)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minigpt2.model import GPT2LMHeadModel, GPT2Model
from minigpt2.weights.safetensors import load_file, save_file

TINY = Path(__file__).resolve().parent / "fixtures" / "models" / "tiny"   # vocab 512, n_positions 64


@pytest.fixture(scope="module")
def model():
    return GPT2LMHeadModel.from_pretrained(TINY, backend="numpy")


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=[[1, 512]]), r"input_ids must be in 0\.\.511.*got 512"),
    (dict(input_ids=[[1, -1]]), r"input_ids must be in 0\.\.511.*got -1"),
    (dict(input_ids=[[1.0, 2.0]]), "input_ids must hold integers, got dtype float64"),
    (dict(input_ids=[[True, False]]), "input_ids must hold integers"),
    (dict(input_ids=np.zeros((1, 2, 3), int)), r"input_ids must be \[batch, seq\]"),
    (dict(input_ids=[[]]), r"input_ids must be \[batch, seq\] with seq >= 1"),
    (dict(input_ids=np.zeros((1, 65), int)), r"sequence too long.*65 new tokens > n_positions \(64\)"),
    (dict(input_ids=[[1, 2]], attention_mask=[[1, 1, 1]]), r"attention_mask must have shape \(1, 2\)"),
    (dict(input_ids=[[1, 2]], attention_mask=[[1, 2]]), "only 0 .* and 1"),
    (dict(input_ids=[[1, 2]], position_ids=[[0, 64]]), r"position_ids must be in 0\.\.63"),
    (dict(input_ids=[[1, 2]], position_ids=[[0, 1, 2]]), "position_ids must be integers of shape"),
    (dict(input_ids=[[1, 2]], token_type_ids=[[0]]), r"token_type_ids has shape \(1, 1\), expected \(1, 2\)"),
    (dict(input_ids=[[1, 2]], head_mask=np.ones(3)), r"head_mask must have shape \(4,\) or \(2, 4\)"),
    (dict(input_ids=[[1, 2]], labels=[[1, 999]]), r"labels must be in 0\.\.511 \(vocab_size\) or -100, got 999"),
    (dict(inputs_embeds=np.zeros((1, 2, 63))), r"inputs_embeds must be float \[batch, seq, n_embd=64\]"),
    (dict(input_ids=[[1]], inputs_embeds=np.zeros((1, 1, 64))), "exactly one of input_ids or inputs_embeds"),
    (dict(), "exactly one of input_ids or inputs_embeds"),
])
def test_bad_call_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_cache_of_another_batch(model):
    cache = model([[1, 2]], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="past_key_values do not fit"):
        model([[1], [2]], past_key_values=cache)


def test_past_key_values_of_the_wrong_kind(model):
    with pytest.raises(ValueError, match="past_key_values must be a KVCache or 2"):
        model([[1]], past_key_values=())
    with pytest.raises(ValueError, match="past_key_values must be a KVCache"):
        model([[1]], past_key_values="cache")


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be 'numba' or 'numpy'"):
        GPT2LMHeadModel.from_pretrained(TINY, backend="torch")


def test_all_labels_ignored_gives_nan_like_transformers(model):
    assert np.isnan(model([[1, 2, 3]], labels=[[-100, -100, -100]]).loss)


def test_one_dimensional_ids_are_one_row(model):
    np.testing.assert_array_equal(model([1, 2, 3]).logits, model([[1, 2, 3]]).logits)


# ---- broken model folders ------------------------------------------------------------------------

def folder_with(tmp_path, tensors=None, raw=None):
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder)
    if raw is not None:
        (folder / "model.safetensors").write_bytes(raw)
    elif tensors is not None:
        save_file(tensors, folder / "model.safetensors")
    return folder


def tensors():
    return {k: np.array(v) for k, v in load_file(TINY / "model.safetensors").items()}


def test_missing_tensor_is_named(tmp_path):
    t = tensors()
    del t["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match=r"model.safetensors: missing tensor 'h.1.mlp.c_fc.bias' \(expected shape \[256\]\)"):
        GPT2LMHeadModel.from_pretrained(folder_with(tmp_path, t))


def test_misshaped_tensor_is_named(tmp_path):
    t = tensors()
    t["transformer.h.0.attn.c_attn.weight"] = t["transformer.h.0.attn.c_attn.weight"].T.copy()
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'h.0.attn.c_attn.weight' has shape "
                                         r"\[192, 64\], expected \[64, 192\]"):
        GPT2LMHeadModel.from_pretrained(folder_with(tmp_path, t))


def test_truncated_file(tmp_path):
    raw = (TINY / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="model.safetensors.*truncated"):
        GPT2LMHeadModel.from_pretrained(folder_with(tmp_path, raw=raw[:-100]))


def test_corrupt_header(tmp_path):
    raw = bytearray((TINY / "model.safetensors").read_bytes())
    raw[8:16] = b"garbage!"                 # the JSON header starts at byte 8
    with pytest.raises(ValueError, match="model.safetensors: header is not valid"):
        GPT2LMHeadModel.from_pretrained(folder_with(tmp_path, raw=bytes(raw)))


def test_no_weights_and_pickles_are_refused(tmp_path):
    folder = folder_with(tmp_path)
    with pytest.raises(ValueError, match="no model.safetensors"):
        GPT2LMHeadModel.from_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(ValueError, match="pytorch_model.bin, which minigpt2 does not read"):
        GPT2Model.from_pretrained(folder)


def test_config_that_does_not_match_the_weights(tmp_path):
    folder = folder_with(tmp_path, tensors())
    config = json.loads((folder / "config.json").read_text())
    config["n_inner"] = 100
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'h.0.mlp.c_fc.weight' has shape \[64, 256\], expected \[64, 100\]"):
        GPT2LMHeadModel.from_pretrained(folder)


def test_unknown_activation(tmp_path):
    folder = folder_with(tmp_path, tensors())
    config = json.loads((folder / "config.json").read_text())
    config["activation_function"] = "wiggle"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="activation_function 'wiggle'"):
        GPT2LMHeadModel.from_pretrained(folder)
