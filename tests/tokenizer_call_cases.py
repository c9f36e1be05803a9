"""The cases of tests/test_tokenizer_call.py (text pairs, pre-split words, pair truncation), and
how transformers' GPT2Tokenizer answers them (used by the fixture script and the live test)."""

import itertools
import json

from minigpt2.tokenizer import ENDOFTEXT, PACKAGE_VOCAB_DIR

TEXTS = ["Hello world", "How are you today?", "x", " leading space", "naïve café ☕ 日本語",
         "a<|endoftext|>b", "one two three four five six seven"]
WORD_LISTS = [["Hello", "world"], ["How", "are", "you?"], ["naïve", "café"], ["don't", " spaced", "x!"],
              ["a<|endoftext|>b"], ["one", "two", "three", "four", "five", "six"]]


def _cases():
    cases = []
    for text, pair in itertools.product(TEXTS, TEXTS):            # pairs, no truncation
        cases.append({"text": text, "text_pair": pair})
    cases.append({"text": TEXTS[:3], "text_pair": TEXTS[3:6]})     # a batch of pairs
    for first, second in [(TEXTS[0], TEXTS[6]), (TEXTS[6], TEXTS[2]), (TEXTS[1], TEXTS[6]),
                          (TEXTS[4], TEXTS[1])]:
        for truncation, max_length, side in itertools.product(
                [True, "only_first", "only_second"], range(1, 16), ["right", "left"]):
            cases.append({"text": first, "text_pair": second, "truncation": truncation,
                          "max_length": max_length, "truncation_side": side})
    for words in WORD_LISTS:                                       # pre-split words, both spacings
        for add_prefix_space in (False, True):
            cases.append({"text": words, "is_split_into_words": True, "add_prefix_space": add_prefix_space})
            cases.append({"text": words, "text_pair": WORD_LISTS[1], "is_split_into_words": True,
                          "add_prefix_space": add_prefix_space})
    cases.append({"text": WORD_LISTS[:3], "is_split_into_words": True, "add_prefix_space": True})
    cases.append({"text": WORD_LISTS[:2], "text_pair": WORD_LISTS[2:4], "is_split_into_words": True})
    for case in list(cases[:12]) + [c for c in cases if c.get("is_split_into_words")][:6]:
        cases.append({**case, "offsets": True})                    # offsets within each text / word
    cases.append({"text": TEXTS[:3], "text_pair": TEXTS[4:7], "padding": True, "padding_side": "left"})
    cases.append({"text": TEXTS[:3], "text_pair": TEXTS[4:7], "padding": True, "padding_side": "right"})
    return cases


CALL_CASES = _cases()


def call_kwargs(case):
    """The keyword arguments of a case, as both tokenizers take them."""
    kwargs = {"return_token_type_ids": True}
    for key in ("text_pair", "is_split_into_words", "truncation", "max_length", "padding"):
        if key in case:
            kwargs[key] = case[key]
    if case.get("offsets"):
        kwargs["return_offsets_mapping"] = True
    return kwargs


def configure(tokenizer, case):
    """Set the tokenizer attributes a case needs (sides, pad token)."""
    tokenizer.truncation_side = case.get("truncation_side", "right")
    tokenizer.padding_side = case.get("padding_side", "right")
    if case.get("padding"):
        tokenizer.pad_token = ENDOFTEXT
    return tokenizer


def transformers_gpt2_tokenizer(add_prefix_space=False):
    """transformers' GPT2Tokenizer from the package's vocabulary files, checked on 'Hello world'."""
    from transformers import GPT2Tokenizer

    vocab = json.loads((PACKAGE_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (PACKAGE_VOCAB_DIR / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line]
    # transformers 5 builds an *empty* tokenizer from vocab_file/merges_file; vocab=/merges= work
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, add_prefix_space=add_prefix_space)
    ids = tokenizer("Hello world")["input_ids"]
    expected = [18435, 995] if add_prefix_space else [15496, 995]
    if ids != expected:
        raise RuntimeError(f"transformers reference is broken: 'Hello world' -> {ids}, expected {expected}")
    return tokenizer


def transformers_result(tokenizers, case):
    """{input_ids, token_type_ids[, offset_mapping]} from transformers, or {"error": True}."""
    tokenizer = configure(tokenizers[case.get("add_prefix_space", False)], case)
    try:
        encoding = tokenizer(case["text"], **call_kwargs(case))
    except Exception:              # transformers raises the tokenizers library's own Exception
        return {"error": True}
    result = {"input_ids": encoding["input_ids"], "token_type_ids": encoding["token_type_ids"],
              "attention_mask": encoding["attention_mask"]}
    if case.get("offsets"):
        result["offset_mapping"] = json.loads(json.dumps(encoding["offset_mapping"]))  # tuples -> lists
    return result
