"""minigpt2.config.GPT2Config: HF field names/defaults, aliases, config.json in and out, presets."""

import json

import pytest

from minigpt2.config import PRESETS, GPT2Config


def test_defaults_match_transformers():
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GPT2Config().to_dict()
    ours = GPT2Config().to_dict()
    for key, value in ours.items():
        if key in theirs:
            assert theirs[key] == value or (key == "id2label" and
                                           {str(k): v for k, v in theirs[key].items()} == value), key
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
                "activation_function", "layer_norm_epsilon", "scale_attn_weights",
                "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "bos_token_id",
                "eos_token_id", "pad_token_id", "summary_type", "summary_use_proj",
                "summary_activation", "summary_proj_to_labels", "summary_first_dropout"):
        assert key in ours and ours[key] == theirs[key], key


def test_defaults_by_hand():
    c = GPT2Config()
    assert (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) == (50257, 1024, 768, 12, 12)
    assert c.n_inner is None and c.inner_dim == 3072 and c.head_dim == 64
    assert c.activation_function == "gelu_new" and c.layer_norm_epsilon == 1e-5
    assert c.bos_token_id == c.eos_token_id == 50256 and c.pad_token_id is None
    assert c.num_labels == 2


def test_aliases():
    c = GPT2Config(hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                   max_position_embeddings=32)
    assert (c.n_embd, c.n_head, c.n_layer, c.n_positions) == (64, 4, 2, 32)
    assert (c.hidden_size, c.num_attention_heads, c.num_hidden_layers, c.max_position_embeddings,
            c.n_ctx) == (64, 4, 2, 32, 32)
    assert GPT2Config(n_ctx=128).n_positions == 128          # pre-v5 config.json spelling


def test_json_round_trip_keeps_unknown_keys(tmp_path):
    c = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_inner=100, architectures=["GPT2LMHeadModel"],
                   task_specific_params={"text-generation": {"do_sample": True}})
    c.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["architectures"] == ["GPT2LMHeadModel"] and raw["n_inner"] == 100
    back = GPT2Config.from_pretrained(tmp_path)
    assert back == c
    assert back.architectures == ["GPT2LMHeadModel"]
    assert back.task_specific_params["text-generation"]["do_sample"] is True


def test_reads_transformers_config_json(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.GPT2Config(n_embd=96, n_layer=3, n_head=3, n_inner=50, num_labels=3,
                            activation_function="relu",
                            scale_attn_by_inverse_layer_idx=True).save_pretrained(tmp_path)
    c = GPT2Config.from_pretrained(tmp_path)
    assert (c.n_embd, c.n_layer, c.n_head, c.n_inner, c.head_dim) == (96, 3, 3, 50, 32)
    assert c.activation_function == "relu" and c.scale_attn_by_inverse_layer_idx
    assert c.num_labels == 3 and c.id2label[2] == "LABEL_2" and c.label2id["LABEL_1"] == 1
    # and transformers reads ours back
    c.save_pretrained(tmp_path / "ours")
    theirs = transformers.GPT2Config.from_pretrained(tmp_path / "ours")
    assert (theirs.n_embd, theirs.n_inner, theirs.num_labels) == (96, 50, 3)
    assert theirs.scale_attn_by_inverse_layer_idx


def test_num_labels():
    c = GPT2Config(num_labels=5)
    assert c.num_labels == 5 and c.id2label[4] == "LABEL_4"
    c = GPT2Config(id2label={"0": "neg", "1": "pos"})
    assert c.num_labels == 2 and c.id2label[1] == "pos"


def test_problem_type_is_a_field_that_round_trips(tmp_path):
    assert GPT2Config().problem_type is None            # transformers' default: choose per call
    c = GPT2Config(num_labels=1, problem_type="regression")
    c.save_pretrained(tmp_path)
    assert GPT2Config.from_pretrained(tmp_path).problem_type == "regression"
    transformers = pytest.importorskip("transformers")
    assert transformers.GPT2Config.from_pretrained(tmp_path).problem_type == "regression"


def test_presets():
    expected = {"gpt2": (768, 12, 12), "gpt2-medium": (1024, 24, 16), "gpt2-large": (1280, 36, 20),
                "gpt2-xl": (1600, 48, 25), "distilgpt2": (768, 6, 12)}
    assert set(PRESETS) == set(expected)
    for name, (n_embd, n_layer, n_head) in expected.items():
        c = GPT2Config.from_pretrained(name)
        assert (c.n_embd, c.n_layer, c.n_head, c.vocab_size, c.n_positions) == (
            n_embd, n_layer, n_head, 50257, 1024)
    assert GPT2Config.from_pretrained("openai-community/gpt2-medium").n_layer == 24
    assert GPT2Config.from_pretrained("gpt2", n_layer=2).n_layer == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_embd=100, n_head=12), "divisible"),
    (dict(n_layer=0), "n_layer"),
    (dict(vocab_size=-1), "vocab_size"),
    (dict(n_inner=0), "n_inner"),
    (dict(n_head=2.5), "n_head"),
])
def test_invalid_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPT2Config(**kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        GPT2Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        GPT2Config.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"n_embd": 10, "n_head": 3}')
    with pytest.raises(ValueError, match="config.json.*divisible"):
        GPT2Config.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="neither a folder"):
        GPT2Config.from_pretrained("no-such-model")
