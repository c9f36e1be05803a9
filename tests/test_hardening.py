"""Issue 20 (hardening), findings 1, 4 and 8: damaged converted folders, configs that ask for
too much, and bad files that must end in one ValueError naming the file, never a traceback or
a crash. Each test was written to fail before its fix."""

import json
import struct
import time

import numpy as np
import pytest

from minigpt2 import quantize
from minigpt2.cli import main
from minigpt2.config import GPT2Config
from minigpt2.model import GPT2LMHeadModel, GPT2Model
from minigpt2.weights.checkpoints import weight_files
from minigpt2.weights.packed import PackedWeight
from minigpt2.weights.safetensors import SafetensorsFile, load_file, load_metadata, save_file

from generation_helpers import write_random_model

SMALL = dict(vocab_size=96, n_embd=16, n_layer=2, n_head=2, n_positions=32)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("orig"), seed=1, **SMALL)


def converted(original, folder, dtype):
    model = GPT2LMHeadModel.from_pretrained(original, backend="numpy", dtype=dtype)
    quantize.save_converted(model, folder)
    return folder


def rewrite(folder, change, config_change=None):
    """Load folder/model.safetensors, let change(tensors) edit it, write it back (same metadata)."""
    path = folder / "model.safetensors"
    metadata = load_metadata(path)
    tensors = {name: np.array(array) for name, array in load_file(path).items()}
    change(tensors)
    save_file(tensors, path, metadata=metadata)
    if config_change:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_change)
        (folder / "config.json").write_text(json.dumps(config))
    return path


def scale_short(t):
    t["h.0.attn.c_attn.weight.scale"] = t["h.0.attn.c_attn.weight.scale"][:-1]


def scale_float64(t):
    t["h.1.mlp.c_fc.weight.scale"] = t["h.1.mlp.c_fc.weight.scale"].astype(np.float64)


def scale_missing(t):
    del t["h.0.mlp.c_proj.weight.scale"]


def int8_as_int32(t):
    t["h.0.attn.c_proj.weight.int8"] = t["h.0.attn.c_proj.weight.int8"].astype(np.int32)


def ln_int32(t):
    t["h.0.ln_1.weight"] = t["h.0.ln_1.weight"].astype(np.int32)


def extra_layer(t):
    t["h.2.ln_1.weight"] = t["h.0.ln_1.weight"].copy()


def untied_head_5_rows(t):
    t["lm_head.weight.int8"] = t["wte.weight.int8"][:5].copy()
    t["lm_head.weight.scale"] = t["wte.weight.scale"][:5].copy()


def untied_head_5_scales(t):
    t["lm_head.weight.int8"] = t["wte.weight.int8"].copy()
    t["lm_head.weight.scale"] = t["wte.weight.scale"][:5].copy()


def packed_1d(t):
    t["h.0.mlp.c_fc.weight.int8"] = t["h.0.mlp.c_fc.weight.int8"].reshape(-1)


def bf16_as_f32(t):
    t["h.0.mlp.c_fc.weight.bfloat16"] = t["h.0.mlp.c_fc.weight.bfloat16"].astype(np.float32)


def bf16_with_scale(t):
    t["h.0.mlp.c_fc.weight.scale"] = np.ones(64, np.float32)


@pytest.mark.parametrize("dtype, change, config_change, tensor", [
    ("int8", scale_short, None, "h.0.attn.c_attn.weight.scale"),
    ("int8", scale_float64, None, "h.1.mlp.c_fc.weight.scale"),
    ("int8", scale_missing, None, "h.0.mlp.c_proj.weight.scale"),
    ("int8", int8_as_int32, None, "h.0.attn.c_proj.weight.int8"),
    ("int8", ln_int32, None, "h.0.ln_1.weight"),
    ("int8", extra_layer, None, "h.2.ln_1.weight"),
    ("int8", untied_head_5_rows, {"tie_word_embeddings": False}, "lm_head.weight.int8"),
    ("int8", untied_head_5_rows, None, "lm_head.weight.int8"),     # tied: an lm_head is one too many
    ("int8", untied_head_5_scales, {"tie_word_embeddings": False}, "lm_head.weight.scale"),
    ("int8", packed_1d, None, "h.0.mlp.c_fc.weight.int8"),
    ("bfloat16", bf16_as_f32, None, "h.0.mlp.c_fc.weight.bfloat16"),
    ("bfloat16", bf16_with_scale, None, "h.0.mlp.c_fc.weight.scale"),
])
def test_damaged_converted_folder_is_refused_before_any_kernel(tmp_path, original, dtype, change,
                                                                 config_change, tensor):
    folder = converted(original, tmp_path / "conv", dtype)
    path = rewrite(folder, change, config_change)
    with pytest.raises(ValueError) as error:
        GPT2LMHeadModel.from_pretrained(folder, backend="numba")
    message = str(error.value)
    assert str(path) in message and repr(tensor) in message, message
    # the command says the same in one line
    code = main(["generate", "hi", "--model", str(folder), "--max-new-tokens", "1"])
    assert code == 1


def test_intact_converted_folders_still_load(tmp_path, original):
    ids = [[1, 2, 3]]
    reference = GPT2LMHeadModel.from_pretrained(original, backend="numpy")(ids).logits
    for dtype in ("int8", "bfloat16", "float16"):
        folder = converted(original, tmp_path / dtype, dtype)
        logits = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")(ids).logits
        np.testing.assert_allclose(logits, reference, atol=0.1)


def test_model_checks_packed_weights_given_directly(original):
    model = GPT2LMHeadModel.from_pretrained(original, backend="numpy", dtype="int8")
    weights = model.state_dict()
    good = weights["h.0.attn.c_attn.weight"]
    weights["h.0.attn.c_attn.weight"] = PackedWeight(good.data, good.scale[:-1], "int8", True)
    with pytest.raises(ValueError, match=r"scale of int8 tensor 'h\.0\.attn\.c_attn\.weight'"):
        GPT2Model(model.config, weights)
    weights["h.0.attn.c_attn.weight"] = PackedWeight(good.data.astype(np.int16), good.scale, "int8", True)
    with pytest.raises(ValueError, match=r"'h\.0\.attn\.c_attn\.weight'.*int16"):
        GPT2Model(model.config, weights)
    weights["h.0.attn.c_attn.weight"] = good
    weights["h.0.ln_1.weight"] = np.ones(16, np.int32)
    with pytest.raises(ValueError, match=r"'h\.0\.ln_1\.weight'.*int32"):
        GPT2Model(model.config, weights)


# ---- finding 4: a config must not make the loader allocate what the weights do not hold ---------

def test_num_labels_is_bounded():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="num_labels"):
        GPT2Config(num_labels=1_000_000_000)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("make", ["checkpoint", "converted"])
def test_huge_n_layer_beside_small_weights_fails_fast(tmp_path, original, make):
    if make == "checkpoint":
        folder = write_random_model(tmp_path / "m", seed=1, **SMALL)
    else:
        folder = converted(original, tmp_path / "m", "int8")
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] = 10_000_000
    (folder / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"n_layer.*10000000.*2 layers") as error:
        GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    assert time.perf_counter() - start < 2.0
    assert "model.safetensors" in str(error.value)


def test_wide_config_beside_small_weights_names_the_mismatch(tmp_path):
    folder = write_random_model(tmp_path / "m", seed=1, **SMALL)
    config = json.loads((folder / "config.json").read_text())
    config.update(n_embd=65536, n_head=1, n_positions=1_000_000)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'wte\.weight' has shape \[96, 16\], expected \[96, 65536\]"):
        GPT2LMHeadModel.from_pretrained(folder, backend="numpy")


# ---- finding 8: one ValueError naming the file, never a traceback -------------------------------

@pytest.mark.parametrize("fields, words", [
    ({"id2label": ["a", "b"]}, "id2label"),
    ({"label2id": ["a", "b"]}, "label2id"),
    ({"label2id": {"x": None}}, "label2id"),
    ({"id2label": {"zero": "a"}}, "id2label"),
    ({"activation_function": ["gelu"]}, "activation_function"),
    ({"num_labels": 1e9}, "num_labels"),
])
def test_bad_config_fields_are_one_line_errors(tmp_path, capsys, fields, words):
    folder = write_random_model(tmp_path / "m", seed=1, **SMALL)
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=words) as error:
        GPT2Config.from_pretrained(folder)
    assert "config.json" in str(error.value)
    assert main(["info", "--model", str(folder)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err


def write_raw_safetensors(path, header_text, data=b""):
    raw = header_text.encode("utf-8") if isinstance(header_text, str) else header_text
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("header, data, words", [
    ('{"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4, "dtype"),
    ('{"w": {"dtype": "F32", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 4]}}', b"\0" * 4, "digits"),
    ('{"w": {"dtype": "F32", "shape": [' + ", ".join(["1"] * 65) + '], "data_offsets": [0, 4]}}',
     b"\0" * 4, "dimensions"),
    ('{"w": {"dtype": {"F32": 1}, "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4, "dtype"),
])
def test_bad_safetensors_headers_name_the_file(tmp_path, header, data, words):
    path = write_raw_safetensors(tmp_path / "model.safetensors", header, data)
    with pytest.raises(ValueError, match=words) as error:
        SafetensorsFile(path).get("w")
    assert str(path) in str(error.value)


def test_non_utf8_index_names_the_file(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(b'{"weight_map": {"w": "a\xff.safetensors"}}')
    with pytest.raises(ValueError, match="utf-8") as error:
        weight_files(tmp_path)
    assert str(index) in str(error.value)


def test_list_pad_token_in_tokenizer_config_names_the_file(tmp_path):
    from minigpt2.tokenizer import GPT2Tokenizer

    GPT2Tokenizer.from_pretrained("gpt2", local_files_only=True).save_pretrained(tmp_path)
    path = tmp_path / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config["pad_token"] = ["<|endoftext|>"]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="pad_token") as error:
        GPT2Tokenizer.from_pretrained(tmp_path)
    assert "tokenizer_config.json" in str(error.value)


@pytest.mark.parametrize("ids", [5, [1.0], [[1, 2]], "12", np.int64(5), [2.5]])
def test_decode_refuses_what_is_not_a_list_of_ids(ids):
    from minigpt2.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained("gpt2", local_files_only=True)
    with pytest.raises(ValueError, match="ids"):
        tok.decode(ids)


def test_decode_still_takes_lists_and_arrays():
    from minigpt2.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained("gpt2", local_files_only=True)
    assert tok.decode([15496, 995]) == tok.decode(np.array([15496, 995])) == "Hello world"
    assert tok.decode([np.int64(15496)]) == "Hello"


@pytest.mark.parametrize("argv, words", [
    (["--new-tokens", "-1"], "--new-tokens"),
    (["--lengths", "0"], "--lengths"),
    (["--lengths", "100000"], "--lengths"),
    (["--rounds", "-1"], "--rounds"),
    (["--rounds", "0"], "--rounds"),
])
def test_bench_refuses_bad_numbers_before_running(capsys, original, argv, words):
    code = main(["bench", "--model", str(original), "--quick", "--lengths", "8", "--new-tokens", "4", *argv])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and words in err, err
