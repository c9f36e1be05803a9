"""Bad input found by probing the public API: each case is a ValueError that names what is wrong,
never a TypeError / IndexError from inside NumPy or the standard library, a NaN, or a silently
wrong answer. (Model call arguments are in test_errors.py.)"""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from minigpt2.config import GPT2Config
from minigpt2.safetensors import load_file, save_file
from minigpt2.tokenizer import GPT2Tokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = FIXTURES / "models" / "tiny"   # vocab 512, n_positions 64, n_layer 2, n_embd 64


@pytest.fixture(scope="module")
def tok():
    return GPT2Tokenizer.from_pretrained("gpt2")


# ---- tokenizer -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    (None, "text must be a str or a list of str, got NoneType"),
    (5, "text must be a str or a list of str, got int"),
    ({"a": 1}, "text must be a str or a list of str, got dict"),     # was: encoded the keys
    ([["a", "b"]], "text must be a str or a list of str, got a list holding list"),
])
def test_tokenizer_call_refuses_what_is_not_text(tok, text, match):
    with pytest.raises(ValueError, match=match):
        tok(text)


@pytest.mark.parametrize("kwargs, match", [
    # max_length=-1 used to cut the last token silently (items[:-1])
    (dict(truncation=True, max_length=-1), "max_length must be None or an integer >= 1, got -1"),
    (dict(truncation=True, max_length=0), "max_length must be None or an integer >= 1, got 0"),
    (dict(truncation=True, max_length="3"), "max_length must be None or an integer >= 1, got '3'"),
    (dict(padding="max_length", max_length=3.0), "max_length must be None or an integer >= 1, got 3.0"),
    # pad_to_multiple_of=-3 used to skip padding silently, leaving rows of different lengths
    (dict(padding=True, pad_to_multiple_of=-3), "pad_to_multiple_of must be None or an integer >= 1"),
])
def test_tokenizer_lengths_are_checked(tok, kwargs, match):
    tok = GPT2Tokenizer.from_pretrained("gpt2", pad_token="<|endoftext|>")
    with pytest.raises(ValueError, match=match):
        tok(["Hello world", "a"], **kwargs)


def test_encode_max_length_is_checked(tok):
    with pytest.raises(ValueError, match="max_length must be None or an integer >= 1, got -2"):
        tok.encode("Hello world", max_length=-2)


@pytest.mark.parametrize("ids, match", [
    (None, "token ids must be a list of ints, got NoneType"),
    (np.array([15496.0, 995.0]), "token ids must be integers, got an array of dtype float64"),
    (np.array([[15496, 995]]), r"decode takes one sequence of ids, got a nested one \(\[15496, 995\] inside\); "
                               "use batch_decode"),
    ([[15496, 995]], "use batch_decode for a batch"),
])
def test_decode_refuses_what_is_not_one_sequence_of_ids(tok, ids, match):
    with pytest.raises(ValueError, match=match):
        tok.decode(ids)


def test_decode_nested_with_skip_special_tokens(tok):
    # was: TypeError: unhashable type: 'list'
    with pytest.raises(ValueError, match="use batch_decode"):
        tok.decode([[15496, 50256]], skip_special_tokens=True)


def test_id_conversions_refuse_non_ids(tok):
    with pytest.raises(ValueError, match="token id None is not in the vocabulary"):
        tok.convert_ids_to_tokens(None)
    with pytest.raises(ValueError, match="token id 1.5 is not in the vocabulary"):
        tok.convert_ids_to_tokens(1.5)
    with pytest.raises(ValueError, match="tokens must be a str or a list of str, got NoneType"):
        tok.convert_tokens_to_ids(None)
    with pytest.raises(ValueError, match="batch_decode takes a list of id sequences, got NoneType"):
        tok.batch_decode(None)
    with pytest.raises(ValueError, match="token id 'x' is not in the vocabulary"):
        tok.pad_token_id = "x"


def test_lone_surrogate_is_named(tok):
    # what sys.argv holds for undecodable bytes (surrogateescape); was a bare UnicodeEncodeError
    with pytest.raises(ValueError, match=r"text holds a lone surrogate '\\udcff'.*errors='replace'"):
        tok.encode("caf\udcff")


def test_save_vocabulary_onto_a_file(tok, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="a_file is a file; save_vocabulary needs a folder"):
        tok.save_vocabulary(target)
    assert target.read_text() == "keep me"


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf"), "1e-5", None])
def test_layer_norm_epsilon_is_checked(eps):
    # a negative or NaN eps gave NaN logits; a string failed deep inside layer_norm
    with pytest.raises(ValueError, match="GPT2Config.layer_norm_epsilon must be a finite number >= 0"):
        GPT2Config(layer_norm_epsilon=eps)


def test_num_labels_is_checked():
    with pytest.raises(ValueError, match="GPT2Config.num_labels must be an int >= 0, got -1"):
        GPT2Config(num_labels=-1)


def test_config_files_that_are_not_json(tmp_path):
    binary = tmp_path / "config.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        GPT2Config.from_json_file(binary)
    with pytest.raises(ValueError, match="is a folder; pass the config.json inside it"):
        GPT2Config.from_json_file(tmp_path)
    with pytest.raises(ValueError, match="from_dict needs a dict of config fields, got list"):
        GPT2Config.from_dict([1])


def test_config_save_pretrained_onto_a_file(tmp_path):
    target = tmp_path / "model"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="model is a file; save_pretrained needs a folder"):
        GPT2Config().save_pretrained(target)
    assert target.read_text() == "keep me"


# ---- safetensors ---------------------------------------------------------------------------------

def safetensors_bytes(header, data=b""):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_shape_whose_size_overflows_int64(tmp_path):
    # 2**32 x 2**32 bytes wrapped to 0 in int64, passed the size check, then failed in reshape
    path = tmp_path / "x.safetensors"
    path.write_bytes(safetensors_bytes({"a": {"dtype": "U8", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}))
    with pytest.raises(ValueError, match=r"x.safetensors: tensor 'a': shape \[4294967296, 4294967296\] x U8 "
                                         r"needs 18446744073709551616 bytes"):
        load_file(path)


def test_deeply_nested_header(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 100_000) + b"[" * 100_000)    # was a RecursionError
    with pytest.raises(ValueError, match="x.safetensors: header is not valid UTF-8 JSON"):
        load_file(path)


def test_load_file_of_a_folder(tmp_path):
    with pytest.raises(ValueError, match="is a folder; pass the .safetensors file inside it"):
        load_file(tmp_path)
