"""GPT2Tokenizer.__call__ with text pairs, pre-split words (is_split_into_words) and the pair
truncation strategies, against transformers' GPT2Tokenizer: the committed answers in
fixtures/tokenizer_call_reference.json (tests/fixtures/make_tokenizer_call_fixtures.py), and
transformers itself when it is installed."""

import json
from pathlib import Path

import pytest

from minigpt2.tokenizer import GPT2Tokenizer
from tokenizer_call_cases import (CALL_CASES, call_kwargs, configure, transformers_gpt2_tokenizer,
                                  transformers_result)

FIXTURE_FILE = Path(__file__).parent / "fixtures" / "tokenizer_call_reference.json"
CASES = json.loads(FIXTURE_FILE.read_text(encoding="utf-8"))["cases"]


_TOKENIZERS = {}


def ours(case):
    add_prefix_space = case.get("add_prefix_space", False)
    if add_prefix_space not in _TOKENIZERS:              # loading the vocabulary once per spacing
        _TOKENIZERS[add_prefix_space] = GPT2Tokenizer.from_pretrained("gpt2",
                                                                      add_prefix_space=add_prefix_space)
    tokenizer = configure(_TOKENIZERS[add_prefix_space], case)
    try:
        encoding = tokenizer(case["text"], **call_kwargs(case))
    except ValueError:
        return {"error": True}
    result = {key: encoding[key] for key in ("input_ids", "token_type_ids", "attention_mask")}
    if case.get("offsets"):
        result["offset_mapping"] = [[list(span) for span in row] if row and isinstance(row[0], list) else
                                    list(row) for row in encoding["offset_mapping"]]
    return json.loads(json.dumps(result))          # tuples -> lists, as in the fixture


def test_the_fixture_holds_the_current_cases():
    assert [entry["case"] for entry in CASES] == json.loads(json.dumps(CALL_CASES))
    assert sum("error" in entry["expected"] for entry in CASES) > 0       # refusals are covered too


@pytest.mark.parametrize("index", range(len(CASES)))
def test_call_matches_transformers(index):
    entry = CASES[index]
    assert ours(entry["case"]) == entry["expected"], entry["case"]


def test_live_transformers_agrees_with_the_fixture():
    pytest.importorskip("transformers")
    tokenizers = {aps: transformers_gpt2_tokenizer(add_prefix_space=aps) for aps in (False, True)}
    for entry in CASES:
        assert transformers_result(tokenizers, entry["case"]) == entry["expected"], entry["case"]


def test_bad_pair_inputs_say_what_is_wrong():
    tokenizer = GPT2Tokenizer.from_pretrained("gpt2")
    with pytest.raises(ValueError, match="text_pair has 1"):
        tokenizer(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="text_pair must be a list of the same length"):
        tokenizer(["a", "b"], "c")
    with pytest.raises(ValueError, match="is_split_into_words=True"):
        tokenizer("not a list of words", is_split_into_words=True)
    with pytest.raises(ValueError, match="needs a text_pair"):
        tokenizer("a b c", truncation="only_second", max_length=1)
    with pytest.raises(ValueError, match="truncation must be"):
        tokenizer("a b c", truncation="sideways")
    with pytest.raises(ValueError, match="cannot fit max_length=2"):
        tokenizer("a b c", "d e", truncation="only_second", max_length=2)
