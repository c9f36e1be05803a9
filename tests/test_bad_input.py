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
from minigpt2.weights.safetensors import load_file, save_file
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


def test_padding_of_an_unhashable_kind(tok):
    with pytest.raises(ValueError, match=r"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', "
                                         r"got \['longest'\]"):
        tok(["a", "b c"], padding=["longest"])             # was TypeError: unhashable type: 'list'


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
    with pytest.raises(ValueError, match="pad_token is a token string .* got the int 50256; to set it by id, "
                                         "set pad_token_id"):
        GPT2Tokenizer.from_pretrained("gpt2").pad_token = 50256


def test_allowed_special_as_a_bare_string(tok):
    # was: "allowed_special: ['<', '>', 'd', 'e', ...] are not special tokens" (the string's characters)
    with pytest.raises(ValueError, match=r"allowed_special must be 'all' or a set of special tokens, "
                                         r"e.g. allowed_special=\{'<\|endoftext\|>'\}"):
        tok.encode("Hello<|endoftext|>", allowed_special="<|endoftext|>")


def test_lone_surrogate_is_named(tok):
    # what sys.argv holds for undecodable bytes (surrogateescape); was a bare UnicodeEncodeError
    with pytest.raises(ValueError, match=r"text holds a lone surrogate '\\udcff'.*errors='replace'"):
        tok.encode("caf\udcff")


def test_lone_surrogate_with_offsets_and_explain(tok):
    with pytest.raises(ValueError, match="text holds a lone surrogate"):
        tok("a\udcffb", return_offsets_mapping=True)
    with pytest.raises(ValueError, match="text holds a lone surrogate"):
        tok.explain("a\udcffb")


def vocab_folder(tmp_path, vocab=None, merges=None, tokenizer_config=None):
    data = Path(__file__).resolve().parents[1] / "minigpt2" / "data" / "gpt2"
    (tmp_path / "vocab.json").write_bytes(vocab if vocab is not None else (data / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes(merges if merges is not None else (data / "vocab.bpe").read_bytes())
    if tokenizer_config is not None:
        (tmp_path / "tokenizer_config.json").write_text(tokenizer_config)
    return tmp_path


@pytest.mark.parametrize("files, match", [
    # were UnicodeDecodeError / AttributeError messages that named no file
    (dict(vocab=b"\xff\xfe"), r"vocab.json: not valid JSON \('utf-8' codec"),
    (dict(merges=b"#version: 0.2\n\xff\xfe x\n"), r"merges.txt: not UTF-8 text"),
    (dict(tokenizer_config="[1]"), r"tokenizer_config.json: expected a JSON object of settings, got list"),
])
def test_tokenizer_files_that_cannot_be_read(tmp_path, files, match):
    with pytest.raises(ValueError, match=match):
        GPT2Tokenizer.from_pretrained(vocab_folder(tmp_path, **files))


def test_half_a_vocabulary_pair(tmp_path):
    folder = vocab_folder(tmp_path)
    (folder / "merges.txt").unlink()
    # was: GPT-2's own vocabulary, silently, in place of the folder's vocab.json
    with pytest.raises(ValueError, match="has vocab.json but no merges.txt; a GPT-2 tokenizer needs both"):
        GPT2Tokenizer.from_pretrained(folder)


def test_padding_side_is_checked_when_loading():
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left', got 'middle'"):
        GPT2Tokenizer.from_pretrained("gpt2", padding_side="middle")


def test_model_max_length_is_checked():
    # model_max_length=0 truncated every text to nothing
    with pytest.raises(ValueError, match="model_max_length must be None or an integer >= 1, got 0"):
        GPT2Tokenizer.from_pretrained("gpt2", model_max_length=0)


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


@pytest.mark.parametrize("path", ["./models/gpt2", "/no/such/folder/gpt2-medium", "~/distilgpt2"])
def test_a_missing_folder_named_like_a_preset_is_not_the_preset(path):
    # was: the preset's config, silently, for a mistyped path that happened to end in "gpt2"
    with pytest.raises(ValueError, match="is neither a folder with config.json nor one of the presets"):
        GPT2Config.from_pretrained(path)


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


# ---- model folders and call arguments ------------------------------------------------------------

def tiny_tensors():
    return {k: np.array(v) for k, v in load_file(TINY / "model.safetensors").items()}


def model_folder(tmp_path, tensors=None, index=None):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder)
    if tensors is not None:
        save_file(tensors, folder / "model.safetensors")
    if index is not None:
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("dtype", [np.int32, np.bool_])
def test_weights_that_are_not_floats(tmp_path, dtype):
    from minigpt2.model import GPT2LMHeadModel

    tensors = tiny_tensors()
    tensors["transformer.h.0.ln_1.weight"] = tensors["transformer.h.0.ln_1.weight"].astype(dtype)
    # was: loaded, and the integers used as weights
    with pytest.raises(ValueError, match=f"model.safetensors: tensor 'h.0.ln_1.weight' has dtype "
                                         f"{np.dtype(dtype)}; GPT-2 weights must be floating point"):
        GPT2LMHeadModel.from_pretrained(model_folder(tmp_path, tensors))


@pytest.mark.parametrize("weight_map, match", [
    ({"wte.weight": "model-00001.safetensors"},
     r"lists shard 'model-00001.safetensors', which is not in .*incomplete download"),   # was FileNotFoundError
    ({"wte.weight": "../../model.safetensors"},
     r"shard '../../model.safetensors' is not a file name in the model folder"),         # was read
    (["model-00001.safetensors"], "weight_map must map tensor names to shard file names"),  # was AttributeError
])
def test_bad_shard_index(tmp_path, weight_map, match):
    from minigpt2.model import GPT2LMHeadModel

    folder = model_folder(tmp_path, index={"metadata": {}, "weight_map": weight_map})
    with pytest.raises(ValueError, match="model.safetensors.index.json: " + match):
        GPT2LMHeadModel.from_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_model():
    from minigpt2.model import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(TINY, backend="numpy")


@pytest.mark.parametrize("kwargs, match", [
    # were numpy's "setting an array element with a sequence..." / "could not convert string to float"
    (dict(input_ids=[[1, 2], [3]]), "input_ids: rows of different lengths"),
    (dict(input_ids=[[1, 2], [3, 4]], attention_mask=[[1, 1], [1]]), "attention_mask: rows of different lengths"),
    (dict(input_ids=[[1, 2]], head_mask="x"), "head_mask must hold numbers"),
])
def test_model_arguments_numpy_cannot_read(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


# ---- heads ---------------------------------------------------------------------------------------

def test_question_answering_positions_of_the_wrong_width():
    from minigpt2.heads import GPT2ForQuestionAnswering

    qa = GPT2ForQuestionAnswering.from_pretrained(FIXTURES / "heads" / "qa", backend="numpy")
    # was numpy's "cannot select an axis to squeeze out which has size not equal to one"
    with pytest.raises(ValueError, match=r"start_positions must be integers of shape \(1,\) or \(1, 1\), "
                                         r"got int64 \(1, 2\)"):
        qa([[1, 2]], start_positions=[[0, 1]], end_positions=[[0, 1]])


def test_double_heads_mc_token_ids_cannot_be_ignored():
    from minigpt2.heads import GPT2DoubleHeadsModel

    model = GPT2DoubleHeadsModel.from_pretrained(FIXTURES / "heads" / "double_heads", backend="numpy")
    # -100 means "ignored" for labels, but a summary position must exist: was an IndexError
    with pytest.raises(ValueError, match=r"mc_token_ids must be in 0..1, got -100 at \(0, 0\)"):
        model([[[1, 2], [3, 4]]], mc_token_ids=[[-100, 1]])
    with pytest.raises(ValueError, match="input_ids: rows of different lengths"):
        model([[[1, 2], [3]]])


# ---- verify --------------------------------------------------------------------------------------

def test_verify_reference_files_that_are_not_references(tmp_path, tiny_model):
    from minigpt2 import verify

    with pytest.raises(ValueError, match=r"model.safetensors: not a reference .npz file \(neither .npz nor .npy\)"):
        verify.Reference.load(TINY / "model.safetensors")      # numpy's message suggested allow_pickle
    with pytest.raises(ValueError, match="is a folder; pass the reference .npz file"):
        verify.Reference.load(tmp_path)
    with pytest.raises(ValueError, match="tolerance must be a number > 0, got '1e-4'"):
        verify.compare(tiny_model, FIXTURES / "verify" / "reference.npz", tolerance="1e-4")


def test_verify_reference_ids_outside_its_vocabulary(tmp_path):
    from minigpt2 import verify

    arrays = dict(np.load(FIXTURES / "verify" / "reference.npz"))
    arrays["input_ids"] = arrays["input_ids"] + 1000
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    # was reported by the model, without the file: "input_ids must be in 0..95 (vocab_size)"
    with pytest.raises(ValueError, match=r"ref.npz: input_ids must be in 0..95 \(the vocab_size of its config\)"):
        verify.Reference.load(path)


# ---- scoring -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ids, kwargs, match", [
    ([1.7, 2.2, 3.9], {}, "input_ids must hold integers, got dtype float64"),     # was scored as [1, 2, 3]
    ([True, False, True], {}, "input_ids must hold integers, got dtype bool"),
    ([[1, 2], [3]], {}, "score takes one text: .*rows of different lengths"),
    (list(range(10)), dict(stride=2.5), r"stride must be an integer in \[1, max_length=64\], got 2.5"),
    (list(range(10)), dict(max_length=8.0), r"max_length must be an integer in \[2, 64\]"),
])
def test_score_refuses_what_it_used_to_round(tiny_model, ids, kwargs, match):
    from minigpt2.scoring import score

    with pytest.raises(ValueError, match=match):
        score(tiny_model, ids, **kwargs)


# ---- generate ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    # NaN passed every `< 0` check: NaN temperature failed later with "every token was filtered
    # out", a NaN repetition penalty generated silently (always the same token)
    (dict(do_sample=True, temperature=float("nan")), "temperature must be >= 0 .*got nan"),
    (dict(repetition_penalty=float("nan")), "repetition_penalty must be > 0, got nan"),
    (dict(do_sample=True, temperature="1"), "temperature must be >= 0 .*got '1'"),      # was TypeError
    (dict(do_sample=True, top_p="0.5"), r"top_p must be in \[0, 1\], got '0.5'"),       # was TypeError
    (dict(eos_token_id=2.7), "eos_token_id must be a token id >= 0 or a list of them, got 2.7"),   # was 2
    (dict(eos_token_id=-1, min_new_tokens=2), "eos_token_id must be a token id >= 0"),  # banned the last id
    (dict(pad_token_id=10**6), r"pad_token_id must be one id in \[0, 512\)"),           # failed mid-generation
    (dict(do_sample=True, seed=-1), "seed must be None, an integer >= 0 or a numpy Generator, got -1"),
    (dict(do_sample=True, seed="abc"), "seed must be None, an integer >= 0 or a numpy Generator, got 'abc'"),
    (dict(stop=5, tokenizer="unused"), "stop must be a string or a list of strings, got 5"),  # was TypeError
    (dict(attention_mask=[[2, 2, 1]]), r"attention_mask must hold only 0 \(padding\) and 1"),   # said "left padding"
])
def test_generate_arguments(tiny_model, kwargs, match):
    from minigpt2.generate import generate

    with pytest.raises(ValueError, match=match):
        generate(tiny_model, [[1, 2, 3]], max_new_tokens=3, **kwargs)


def test_min_new_tokens_with_an_eos_outside_the_vocabulary(tiny_model):
    from minigpt2.generate import generate

    # The default eos 50256 is past this model's 512 ids: it can never be generated, so
    # min_new_tokens has nothing to ban (was an IndexError); the result is plain greedy decoding.
    out = generate(tiny_model, [[1, 2, 3]], max_new_tokens=3, min_new_tokens=2)
    np.testing.assert_array_equal(out, generate(tiny_model, [[1, 2, 3]], max_new_tokens=3))


# ---- command line --------------------------------------------------------------------------------

def test_cli_bench_on_a_folder_that_is_not_a_model(tmp_path, capsys):
    from minigpt2 import cli

    (tmp_path / "config.json").write_text((TINY / "config.json").read_text())
    # was: every worker process died with a traceback from from_pretrained
    assert cli.main(["bench", "--model", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minigpt2: error: ") and "no model.safetensors" in err and "Traceback" not in err


def test_an_empty_model_name_is_not_the_current_folder(tmp_path, monkeypatch):
    from minigpt2.model import GPT2LMHeadModel

    # Path("") is ".": from_pretrained("") loaded whatever model the current folder held
    shutil.copy(TINY / "config.json", tmp_path)
    shutil.copy(TINY / "model.safetensors", tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("", "  "):
        with pytest.raises(ValueError, match=r"no model given \('\s*'\): pass a model name such as 'gpt2' or a folder"):
            GPT2LMHeadModel.from_pretrained(name)


def test_cli_model_whose_tokenizer_outgrows_its_vocabulary(capsys):
    from minigpt2 import cli

    # the tiny fixture has vocab_size 512 and no vocabulary files, so GPT-2's 50257-token one is used:
    # was "input_ids holds ids outside [0, 512)" for a prompt the user typed, naming no file
    assert cli.main(["generate", "Hello world", "--model", str(TINY), "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minigpt2: error: ") and "tiny: the tokenizer has 50257 tokens but the model's " \
        "vocab_size is 512" in err


# ---- KV cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("beam_idx", [[5], [-1], [0.5], [True]])
def test_cache_reorder_takes_row_indices(tiny_model, beam_idx):
    cache = tiny_model([[1, 2]], use_cache=True).past_key_values
    # were IndexErrors, or for -1 / True a silently different row choice
    with pytest.raises(ValueError, match=r"beam_idx must be a 1-D list of row indices in 0..0"):
        cache.reorder(beam_idx)


def test_save_file_over_the_file_its_tensors_are_mapped_from(tmp_path):
    # load_file maps the file; save_file opened the same path with "wb", truncating it under the
    # map: the process died with a bus error and the checkpoint was left empty.
    path = tmp_path / "model.safetensors"
    shutil.copy(TINY / "model.safetensors", path)
    path.chmod(0o640)
    expected = {name: np.array(array) for name, array in load_file(path).items()}
    tensors = load_file(path)
    tensors["extra"] = np.arange(3, dtype=np.float32)
    save_file(tensors, path)
    back = load_file(path)
    assert sorted(back) == sorted([*expected, "extra"])
    for name, array in expected.items():
        np.testing.assert_array_equal(back[name], array)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]     # no temporary left behind
    assert path.stat().st_mode & 0o777 == 0o640


def test_save_file_to_a_folder(tmp_path):
    with pytest.raises(ValueError, match="save_file: .* is a folder; pass the path of the .safetensors file"):
        save_file({"a": np.zeros(2)}, tmp_path)


# ---- tokenizer: long single pieces (a hang before) -----------------------------------------------

LONG_PIECES = ["😀" * 3000, "é" * 3000, "ab" * 2000 + "x", "a" * 5000, "aé😀1" * 700, "0" * 999]


@pytest.mark.parametrize("text", LONG_PIECES, ids=["emoji", "e-acute", "ab", "a", "mixed", "digits"])
def test_long_single_piece_against_tiktoken(tok, text):
    # One pre-tokenizer piece of n bytes cost O(n^2) merge scans: 40 KB of one emoji took 20 s.
    # Pieces longer than LONG_PIECE_BYTES use the heap loop, which must give tiktoken's ids.
    pytest.importorskip("tiktoken")
    from minigpt2.tokenizer.reference import tiktoken_gpt2

    assert tok.encode(text) == tiktoken_gpt2().encode_ordinary(text)


@pytest.mark.parametrize("text", LONG_PIECES, ids=["emoji", "e-acute", "ab", "a", "mixed", "digits"])
def test_heap_and_list_merge_loops_agree(tok, text, monkeypatch):
    import minigpt2.tokenizer.bpe as tokenizer_module

    data = text.encode("utf-8")
    heap_ids = tok.bpe_ids_long(data)
    monkeypatch.setattr(tokenizer_module, "LONG_PIECE_BYTES", 10**9)   # the readable list loop
    assert tok.bpe_ids(data) == heap_ids


def test_weights_the_config_has_no_place_for(tmp_path):
    from minigpt2.model import GPT2LMHeadModel

    folder = model_folder(tmp_path, tiny_tensors())
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] = 1                  # the weights have 2 layers
    (folder / "config.json").write_text(json.dumps(config))
    # was: loaded, layer h.1 silently dropped
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'h.1.\S+' \(and 11 more\) is not used by "
                                         r"the model config.json describes \(n_layer=1\)"):
        GPT2LMHeadModel.from_pretrained(folder)


def test_a_whole_batch_encoding_as_input_ids(tok, tiny_model):
    encoding = tok("Hello world")
    # was: "input_ids must hold integers, got dtype object" / "got shape ()"
    with pytest.raises(ValueError, match=r"input_ids got a dict \(keys \['attention_mask', 'input_ids'\]\); "
                                         r"pass its arrays by name: model\(\*\*encoding\)"):
        tiny_model(encoding)
    with pytest.raises(ValueError, match=r"input_ids got a dict .*model.generate\(\*\*encoding\)"):
        tiny_model.generate(encoding)


def test_save_file_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "blob"
    save_file({"a": np.zeros(2, np.float32)}, target)
    link = tmp_path / "model.safetensors"
    link.symlink_to(target)
    save_file({"a": np.ones(2, np.float32)}, link)
    assert link.is_symlink()
    np.testing.assert_array_equal(load_file(target)["a"], [1, 1])


def test_from_pretrained_on_a_converted_folder(tmp_path):
    from minigpt2 import quantize
    from minigpt2.heads import GPT2ForSequenceClassification
    from minigpt2.model import GPT2LMHeadModel

    model = quantize.convert_model(GPT2LMHeadModel.from_pretrained(TINY, backend="numpy"), "int8")
    quantize.save_converted(model, tmp_path)
    # GPT2LMHeadModel.from_pretrained loads it (tests/test_dtype_loading.py); a task head cannot.
    # was: "missing tensor 'wte.weight'" (its packed name is wte.weight.int8)
    with pytest.raises(ValueError, match=r"model.safetensors holds int8 weights written by "
                                         r"minigpt2.quantize.save_converted"):
        GPT2ForSequenceClassification.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds int8 weights .*not 'bfloat16'"):
        GPT2LMHeadModel.from_pretrained(tmp_path, dtype="bfloat16")


@pytest.mark.parametrize("name", [None, 3, ["gpt2"]])
def test_from_pretrained_needs_a_name_or_a_path(name):
    from minigpt2.heads import GPT2ForSequenceClassification
    from minigpt2.model import GPT2LMHeadModel
    for cls in (GPT2LMHeadModel, GPT2ForSequenceClassification):
        with pytest.raises(ValueError, match="needs a model name or a folder path, got"):
            cls.from_pretrained(name)
