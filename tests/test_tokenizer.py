"""GPT2Tokenizer: exact ids against published examples and against tiktoken / tokenizers.

Expected ids come from published sources (cited per case), from the reference libraries built
offline from the same vocabulary files (minigpt2/tokenizer_reference.py), or from the files.
"""

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt2.tokenizer.bytes_unicode import BYTE_TO_CHAR, CHAR_TO_BYTE, bytes_to_symbols, symbols_to_bytes
from minigpt2.tokenizer import PACKAGE_VOCAB_DIR, GPT2Tokenizer

from conftest import DATA_DIR, FIXTURES_DIR
from tokenizer_cases import edge_case_texts

EOT = 50256


@pytest.fixture(scope="module")
def tok():
    return GPT2Tokenizer.from_pretrained("gpt2")


@pytest.fixture(scope="module")
def tiktoken_enc():
    pytest.importorskip("tiktoken")
    from minigpt2.tokenizer.reference import tiktoken_gpt2
    return tiktoken_gpt2()


@pytest.fixture(scope="module")
def hf_fast():
    pytest.importorskip("tokenizers")
    from minigpt2.tokenizer.reference import tokenizers_gpt2
    return tokenizers_gpt2()


@pytest.fixture(scope="module")
def shakespeare():
    return (DATA_DIR / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def blns():
    return (DATA_DIR / "blns.txt").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- package data

def test_package_vocabulary_files_are_openais():
    # sha256 pinned by tiktoken 0.14 for its gpt2 encoding (tiktoken_ext/openai_public.py);
    # sizes asserted by LLMs-from-scratch's tests.
    expected = {
        "encoder.json": (1042301, "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        "vocab.bpe": (456318, "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    }
    for name, (size, sha256) in expected.items():
        data = (PACKAGE_VOCAB_DIR / name).read_bytes()
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == sha256
    assert (PACKAGE_VOCAB_DIR / "SOURCE.md").is_file()


# ----------------------------------------------------------------------------- byte <-> unicode

def test_byte_to_unicode_table():
    assert len(BYTE_TO_CHAR) == 256 and len(CHAR_TO_BYTE) == 256
    kept = [b for b, c in BYTE_TO_CHAR.items() if ord(c) == b]
    assert len(kept) == 188                                   # printable Latin-1 keep their glyph
    shifted = sorted(ord(c) for b, c in BYTE_TO_CHAR.items() if ord(c) != b)
    assert shifted == list(range(256, 256 + 68))               # the rest: 256 + n, in byte order
    assert BYTE_TO_CHAR[ord(" ")] == "Ġ" == "\u0120"
    assert BYTE_TO_CHAR[ord("\n")] == "Ċ" and BYTE_TO_CHAR[ord("\t")] == "ĉ"
    every_byte = bytes(range(256))
    assert symbols_to_bytes(bytes_to_symbols(every_byte)) == every_byte


def test_vocabulary_facts(tok):
    assert len(tok) == tok.vocab_size == 50257
    assert tok.encoder["Ċ"] == 198 and tok.encoder["Ġ"] == 220
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.eos_token_id == EOT
    assert tok.pad_token is None and tok.pad_token_id is None
    assert len(tok.bpe_ranks) == 50000


# ----------------------------------------------------------------------------- golden ids

GOLDEN = [
    # minGPT bpe.py worked example (karpathy/minGPT, mingpt/bpe.py __main__)
    ("Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗",
     [15496, 3228, 314, 1101, 10948, 73, 509, 5117, 10036, 13, 632, 338, 33160, 13, 266, 405, 83, 1058, 35,
      12520, 97, 245]),
    # transformers GPT2Tokenizer docstring
    ("Hello world", [15496, 995]),
    (" Hello world", [18435, 995]),
    # LLMs-from-scratch ch02/ch05 tests
    ("Hello,", [15496, 11]),
    ("Implementations", [3546, 26908, 602]),
    ("Hello, world. Is this-- a test?", [15496, 11, 995, 13, 1148, 428, 438, 257, 1332, 30]),
    ("\n", [198]),
    ("<|endoftext|>", [EOT]),
    # transformers issue #21119
    ("y is ?", [88, 318, 5633]),
]


@pytest.mark.parametrize("text, ids", GOLDEN)
def test_golden_ids(tok, text, ids):
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_add_prefix_space_changes_the_first_id():
    # transformers docstring: with add_prefix_space, "Hello world" is encoded like " Hello world"
    tok = GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=True)
    assert tok.encode("Hello world") == [18435, 995]
    assert tok.encode(" Hello world") == [18435, 995]     # no second space (tokenizers' rule)
    assert tok.encode("") == []


# ----------------------------------------------------------------------------- vs the references

def test_committed_reference_ids_and_offsets(tok):
    # Made by tests/fixtures/make_tokenizer_fixtures.py from tiktoken and tokenizers: runs without them.
    fixture = json.loads((FIXTURES_DIR / "tokenizer_reference.json").read_text(encoding="utf-8"))
    assert len(fixture["cases"]) > 250
    for case in fixture["cases"]:
        text = case["text"]
        got = tok(text, return_offsets_mapping=True)
        assert got["input_ids"] == case["ids"], repr(text)
        assert got["offset_mapping"] == [tuple(span) for span in case["offsets"]], repr(text)
        assert tok.encode_ordinary(text) == case["ordinary_ids"], repr(text)


def test_tinyshakespeare_whole_file(tok, tiktoken_enc, hf_fast, shakespeare):
    ids = tok.encode(shakespeare)
    assert ids == tiktoken_enc.encode_ordinary(shakespeare)
    assert ids == hf_fast.encode(shakespeare).ids
    assert tok.decode(ids) == shakespeare


def test_tinyshakespeare_line_by_line(tok, tiktoken_enc, shakespeare):
    lines = shakespeare.split("\n")
    assert [tok.encode(line) for line in lines] == tiktoken_enc.encode_ordinary_batch(lines, num_threads=1)


def test_blns_whole_file(tok, tiktoken_enc, hf_fast, blns):
    ids = tok.encode(blns)
    assert ids == tiktoken_enc.encode(blns, allowed_special="all")
    assert ids == hf_fast.encode(blns).ids
    assert tok.decode(ids) == blns


def test_blns_line_by_line(tok, tiktoken_enc, hf_fast, blns):
    for line in blns.split("\n"):
        ids = tok.encode(line)
        assert ids == tiktoken_enc.encode(line, allowed_special="all"), repr(line)
        assert ids == hf_fast.encode(line).ids, repr(line)
        assert tok.encode_ordinary(line) == tiktoken_enc.encode_ordinary(line), repr(line)


def test_generated_edge_cases(tok, tiktoken_enc, hf_fast):
    texts = edge_case_texts()
    ours = [tok.encode(t) for t in texts]
    assert ours == tiktoken_enc.encode_batch(texts, allowed_special="all", num_threads=1)
    assert ours == [e.ids for e in hf_fast.encode_batch(texts)]
    assert [tok.decode(ids) for ids in ours] == texts


def test_offsets_match_tokenizers(hf_fast):
    for add_prefix_space in (False, True):
        from tokenizers import ByteLevelBPETokenizer
        reference = ByteLevelBPETokenizer(str(PACKAGE_VOCAB_DIR / "encoder.json"), str(PACKAGE_VOCAB_DIR / "vocab.bpe"),
                                          add_prefix_space=add_prefix_space)
        reference.add_special_tokens(["<|endoftext|>"])
        tok = GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=add_prefix_space)
        for text in edge_case_texts()[:300] + ["a<|endoftext|>b", "<|endoftext|> é\n", " x"]:
            expected = reference.encode(text)
            got = tok(text, return_offsets_mapping=True)
            assert got["input_ids"] == expected.ids, repr(text)
            assert got["offset_mapping"] == expected.offsets, repr(text)


# Letters and digits added in Unicode 15 and 16 (Kawi, Nag Mundari, Gurung Khema, Kirat Rai, Ol Onal,
# Sunuwar, Todhri, Tulu-Tigalari, Garay, Cyrillic modifiers): unknown to Python 3.11's unicodedata,
# known to `regex`. benchmarks/scan_unicode_tables.py found no code point where `regex` disagrees
# with tiktoken or tokenizers; these keep that decision pinned.
RECENT_LETTERS = [0x11F04, 0x1E4D0, 0x16100, 0x16D40, 0x1E5D0, 0x11BC0, 0x105C0, 0x11380, 0x1E030]
RECENT_DIGITS = [0x11F50, 0x10D40, 0x16130, 0x11BF0]


def test_recent_unicode_letters_and_digits(tok, tiktoken_enc, hf_fast):
    import regex
    for code_point in RECENT_LETTERS + RECENT_DIGITS:
        c = chr(code_point)
        assert regex.match(r"\p{L}" if code_point in RECENT_LETTERS else r"\p{N}", c)
        text = f"a{c}a 1{c}1 !{c}! {c}\n{c} {c}{c}"
        assert tok.encode(text) == tiktoken_enc.encode_ordinary(text) == hf_fast.encode(text).ids, hex(code_point)


# ----------------------------------------------------------------------------- the merge loop

def test_every_vocabulary_entry_rebuilds_itself(tok):
    # Justifies the whole-token shortcut in _encode_piece (tiktoken takes the same one), for both
    # merge loops: the incremental one on ids and OpenAI's all-occurrences loop on strings.
    for token, token_id in tok.encoder.items():
        if token_id != EOT:
            data = symbols_to_bytes(token)
            assert tok.bpe_ids(data) == [token_id], token
            assert tok.bpe_symbols(data) == [token], token


def test_whole_token_shortcut_only_for_gpt2_merges(tmp_path, tok):
    assert len(tok._bytes_to_id) == 50256
    # A toy vocabulary where the entry "abc" is not what BPE makes of b"abc": (b, c) merges first.
    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    vocab.update({"bc": 256, "ab": 257, "abc": 258})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nb c\na b\nab c\n", encoding="utf-8")
    toy = GPT2Tokenizer.from_pretrained(tmp_path)
    assert toy._bytes_to_id == {}
    assert toy.encode("abc") == [ord("a"), 256] == [toy.encoder[s] for s in toy.bpe_symbols(b"abc")]


def test_added_tokens_outside_the_byte_alphabet_are_special(tmp_path):
    encoder = json.loads((PACKAGE_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
    encoder["<my pad>"] = 50257
    (tmp_path / "vocab.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp_path / "merges.txt").write_bytes((PACKAGE_VOCAB_DIR / "vocab.bpe").read_bytes())
    tok = GPT2Tokenizer.from_pretrained(tmp_path, pad_token="<my pad>")
    assert tok.encode("Hello<my pad>") == [15496, 50257] and tok.pad_token_id == 50257
    assert tok.decode([15496, 50257]) == "Hello<my pad>"
    assert 50257 not in tok.encode_ordinary("Hello<my pad>")
    assert len(tok._bytes_to_id) == 50256      # still GPT-2's merges: the shortcut stays on


def test_string_merge_loop_equals_id_merge_loop(tok, shakespeare):
    pieces = set(tok._pretokenize.findall(shakespeare[:20000] + " ".join(edge_case_texts()[:200])))
    for piece in pieces:
        symbols = tok.bpe_symbols(piece.encode("utf-8"))
        assert [tok.encoder[s] for s in symbols] == tok.bpe_ids(piece.encode("utf-8")), piece


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet="ab ", max_size=40).map(str.encode))
def test_both_merge_loops_agree_on_any_bytes(tok, data):
    assert [tok.encoder[s] for s in tok.bpe_symbols(data)] == tok.bpe_ids(data)


def test_cache_is_bounded_and_changes_nothing(shakespeare):
    text = shakespeare[:50000]
    uncached = GPT2Tokenizer.from_pretrained("gpt2", cache_size=0)
    small = GPT2Tokenizer.from_pretrained("gpt2", cache_size=64)
    expected = uncached.encode(text)
    assert small.encode(text) == expected
    assert small.encode(text) == expected                 # warm
    chunk_info, piece_info = small.cache_info()
    assert chunk_info.currsize <= 64 and piece_info.currsize <= 64
    assert chunk_info.hits > 0
    small.clear_cache()
    assert small.cache_info()[0].currsize == 0


def test_ascii_pattern_on_every_ascii_pair(tok):
    texts = [a + b + c for a in map(chr, range(128)) for b in map(chr, range(128)) for c in ("", " x", "'s")]
    assert [tok._pretokenize_ascii.findall(t) for t in texts] == [tok._pretokenize.findall(t) for t in texts]


def test_pickle_and_copy(tok):
    import copy
    import pickle
    for clone in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert clone.encode("Hello world<|endoftext|>") == [15496, 995, EOT]
        assert clone._encode_chunk is not tok._encode_chunk      # its own caches


def test_contractions_are_case_sensitive(tok):
    assert tok.tokenize("I'm") == ["I", "'m"]
    assert tok.tokenize("I'M") == ["I", "'", "M"]


# ----------------------------------------------------------------------------- special tokens

def test_special_token_policy(tok, tiktoken_enc):
    text = "a<|endoftext|>b"
    assert tok.encode(text) == [64, EOT, 65]                       # transformers' behaviour
    assert tok(text)["input_ids"] == [64, EOT, 65]
    ordinary = tiktoken_enc.encode_ordinary(text)                  # the safe path: plain text
    assert EOT not in ordinary
    assert tok.encode_ordinary(text) == ordinary
    assert tok.encode(text, allowed_special=()) == ordinary
    assert tok(text, allowed_special=set())["input_ids"] == ordinary
    with pytest.raises(ValueError, match="special token"):
        tok.encode(text, allowed_special=(), disallowed_special="all")
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|im_start|>"})
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.encode("<|endoftext|><|endoftext|>") == [EOT, EOT]
    assert tok.encode(" <|endoftext|>\n") == [220, EOT, 198]
    assert tok.encode("<|endoftext|") == tiktoken_enc.encode_ordinary("<|endoftext|")


# ----------------------------------------------------------------------------- decode

def test_decode_is_exact_and_replaces_invalid_utf8(tok, tiktoken_enc):
    assert tok.decode(tok.encode("y is ?")) == "y is ?"           # no clean-up (transformers #21119)
    assert tok.decode(tok.encode("y is ?"), clean_up_tokenization_spaces=True) == "y is?"
    partial = tok.encode("🤗")[:2]                                  # cut inside the character
    assert tok.decode_bytes(partial) == "🤗".encode("utf-8")[:3]
    assert tok.decode(partial) == tiktoken_enc.decode(partial) == "\ufffd"
    assert tok.decode(np.array([15496, 995])) == "Hello world"
    assert tok.decode([15496, EOT], skip_special_tokens=True) == "Hello"
    assert tok.batch_decode(np.array([[15496, 995], [18435, 995]])) == ["Hello world", " Hello world"]
    for bad in ([50257], [-1], [1.5]):
        with pytest.raises(ValueError, match="not in the vocabulary"):
            tok.decode(bad)


def test_token_conversions(tok):
    assert tok.tokenize(" Hello world") == ["ĠHello", "Ġworld"]
    assert tok.convert_tokens_to_ids(["ĠHello", "Ġworld"]) == [18435, 995]
    assert tok.convert_tokens_to_ids("Ċ") == 198
    assert tok.convert_ids_to_tokens([18435, 995]) == ["ĠHello", "Ġworld"]
    assert tok.convert_ids_to_tokens(198) == "Ċ"
    assert tok.convert_tokens_to_string(["ĠHello", "Ġworld"]) == " Hello world"
    with pytest.raises(ValueError):
        tok.convert_ids_to_tokens(99999)


# ----------------------------------------------------------------------------- batches

def test_call_single_and_batch_without_padding(tok):
    enc = tok("Hello world")
    assert enc["input_ids"] == [15496, 995] and enc.attention_mask == [1, 1]
    enc = tok(["Hello world", "Hi"])
    assert enc["input_ids"] == [[15496, 995], [17250]]
    assert tok("Hello world", return_tensors="np")["input_ids"].shape == (1, 2)
    assert tok.encode("Hello world", return_tensors="np").tolist() == [[15496, 995]]
    with pytest.raises(ValueError, match="padding=True"):
        tok(["Hello world", "Hi"], return_tensors="np")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("Hi", return_tensors="pt")


def test_padding_needs_a_pad_token():
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    with pytest.raises(ValueError, match="pad_token"):
        tok(["Hello world", "Hi"], padding=True)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_sides(side):
    tok = GPT2Tokenizer.from_pretrained("gpt2", pad_token="<|endoftext|>", padding_side=side)
    enc = tok(["Hello world", "Hi"], padding=True, return_tensors="np")
    assert enc["input_ids"].dtype == np.int64 and enc["input_ids"].shape == (2, 2)
    if side == "right":
        assert enc["input_ids"].tolist() == [[15496, 995], [17250, EOT]]
        assert enc["attention_mask"].tolist() == [[1, 1], [1, 0]]
    else:
        assert enc["input_ids"].tolist() == [[15496, 995], [EOT, 17250]]
        assert enc["attention_mask"].tolist() == [[1, 1], [0, 1]]
    enc = tok(["Hi"], padding="max_length", max_length=4)
    assert len(enc["input_ids"][0]) == 4 and sum(enc["attention_mask"][0]) == 1
    enc = tok(["Hello world", "Hi"], padding=True, pad_to_multiple_of=8, return_offsets_mapping=True,
              return_tensors="np")
    assert enc["input_ids"].shape == (2, 8) and enc["offset_mapping"].shape == (2, 8, 2)


def test_truncation_sides():
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    text = "Hello, world. Is this-- a test?"
    assert tok(text, truncation=True, max_length=3)["input_ids"] == [15496, 11, 995]
    assert tok.encode(text, max_length=2) == [15496, 11]
    tok.truncation_side = "left"
    assert tok(text, truncation=True, max_length=3)["input_ids"] == [257, 1332, 30]


def test_pad_token_id_setter():
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == EOT
    tok.pad_token_id = 198
    assert tok.pad_token == "Ċ"
    with pytest.raises(ValueError, match="pad_token"):
        tok.pad_token = "<pad>"


# ----------------------------------------------------------------------------- files

def test_save_vocabulary_round_trip(tok, tmp_path):
    vocab_file, merges_file = tok.save_vocabulary(tmp_path)
    assert json.loads(open(vocab_file, encoding="utf-8").read()) == json.loads(
        (PACKAGE_VOCAB_DIR / "encoder.json").read_text(encoding="utf-8"))
    assert open(merges_file, encoding="utf-8").read() == (PACKAGE_VOCAB_DIR / "vocab.bpe").read_text(encoding="utf-8")
    reloaded = GPT2Tokenizer.from_pretrained(tmp_path)
    text = "Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗<|endoftext|>"
    assert reloaded.encode(text) == tok.encode(text)
    assert reloaded.bpe_ranks == tok.bpe_ranks and reloaded.encoder == tok.encoder


def test_saved_files_load_in_tokenizers(tok, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab_file, merges_file = tok.save_vocabulary(tmp_path, filename_prefix="x")
    reference = tokenizers.ByteLevelBPETokenizer(vocab_file, merges_file)
    assert reference.encode("Hello world").ids == [15496, 995]


def test_save_pretrained_keeps_settings(tmp_path):
    tok = GPT2Tokenizer.from_pretrained("gpt2", add_prefix_space=True, pad_token="<|endoftext|>",
                                        padding_side="left")
    tok.save_pretrained(tmp_path)
    reloaded = GPT2Tokenizer.from_pretrained(tmp_path)
    assert reloaded.add_prefix_space and reloaded.pad_token_id == EOT and reloaded.padding_side == "left"
    assert GPT2Tokenizer.from_pretrained(tmp_path, add_prefix_space=False).encode("Hi") == [17250]


def test_transformers_agrees_on_our_saved_folder(tmp_path):
    # transformers 5 loads what save_pretrained wrote; its __call__ is the reference for batches.
    transformers = pytest.importorskip("transformers")
    ours = GPT2Tokenizer.from_pretrained("gpt2")
    ours.save_pretrained(tmp_path)
    theirs = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path))
    texts = edge_case_texts(n_random=60)[::3] + ["a<|endoftext|>b", "Hello world"]
    assert [ours.encode(t) for t in texts] == [theirs.encode(t) for t in texts]
    with pytest.raises(ValueError):
        theirs(["a", "b c"], padding=True)            # both refuse to pad without a pad token
    batch = ["Hello world, again", "Hi", "<|endoftext|> x"]
    for tok in (ours, theirs):
        tok.pad_token = tok.eos_token
    for side in ("right", "left"):
        ours.padding_side = theirs.padding_side = side
        ours.truncation_side = theirs.truncation_side = side
        for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 6},
                       {"padding": True, "truncation": True, "max_length": 3}):
            expected = theirs(batch, return_tensors="np", return_offsets_mapping=True, **kwargs)
            got = ours(batch, return_tensors="np", return_offsets_mapping=True, **kwargs)
            for key in ("input_ids", "attention_mask", "offset_mapping"):
                np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key} {side} {kwargs}")
    prefixed = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path), add_prefix_space=True)
    ours_prefixed = GPT2Tokenizer.from_pretrained(tmp_path, add_prefix_space=True)
    for text in ["Hello world", " x", "a<|endoftext|>b", "\n", ""]:
        assert ours_prefixed.encode(text) == prefixed.encode(text), repr(text)


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"])
def test_official_names_load_offline(name):
    assert GPT2Tokenizer.from_pretrained(name).encode("Hello world") == [15496, 995]


def test_folder_with_hf_file_names_and_fallback(tmp_path, tok, monkeypatch):
    (tmp_path / "vocab.json").write_bytes((PACKAGE_VOCAB_DIR / "encoder.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((PACKAGE_VOCAB_DIR / "vocab.bpe").read_bytes())
    assert GPT2Tokenizer.from_pretrained(str(tmp_path)).encode(" Hello world") == [18435, 995]
    # A model folder without vocabulary files falls back to GPT-2's; names go through minigpt2.weights.hub.
    empty = tmp_path / "model-without-vocab"
    empty.mkdir()
    import sys
    import types
    calls = []
    fake_hub = types.SimpleNamespace(
        resolve_model_folder=lambda name, cache_dir=None, local_files_only=False: calls.append(name) or empty)
    monkeypatch.setitem(sys.modules, "minigpt2.weights.hub", fake_hub)
    import minigpt2.weights
    monkeypatch.setattr(minigpt2.weights, "hub", fake_hub, raising=False)
    loaded = GPT2Tokenizer.from_pretrained("someone/some-model", local_files_only=True)
    assert calls == ["someone/some-model"] and loaded.encode("Hello world") == [15496, 995]


def test_bad_files_give_clear_errors(tmp_path):
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab.write_text("{not json", encoding="utf-8")
    merges.write_text("#version: 0.2\nĠ t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json"):
        GPT2Tokenizer(vocab, merges)
    vocab.write_bytes((PACKAGE_VOCAB_DIR / "encoder.json").read_bytes())
    merges.write_text("#version: 0.2\nĠ t\nthree symbols here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        GPT2Tokenizer(vocab, merges)
    vocab.write_text(json.dumps({"a": 0, "b": 1}), encoding="utf-8")
    merges.write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="256 single-byte"):
        GPT2Tokenizer(vocab, merges)
    with pytest.raises(ValueError, match="str"):
        GPT2Tokenizer.from_pretrained("gpt2").encode(b"bytes")


# ----------------------------------------------------------------------------- explain

def test_explain_shows_the_work(tok):
    explanation = tok.explain("Hello world<|endoftext|> 🤗")
    assert explanation.ids == tok.encode("Hello world<|endoftext|> 🤗") == [15496, 995, EOT, 12520, 97, 245]
    hello = explanation.pieces[0]
    assert hello.text == "Hello" and hello.data == b"Hello" and hello.symbols == list("Hello")
    assert [(s.left, s.right) for s in hello.merges][0] == ("l", "l")
    assert hello.merges[-1].symbols == ["Hello"] and hello.tokens == ["Hello"]
    assert [step.rank for step in hello.merges] == [tok.bpe_ranks[(s.left, s.right)] for s in hello.merges]
    assert explanation.pieces[2].special and explanation.pieces[2].ids == [EOT]
    printed = str(explanation)
    assert "merge rank" in printed and "l + l" in printed and "50256" in printed


# ----------------------------------------------------------------------------- properties

@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_string(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode_ordinary(text)) == text


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_pattern_splits_like_the_unicode_one(tok, text):
    assert tok._pretokenize_ascii.findall(text) == tok._pretokenize.findall(text)


_pieces_alphabet = st.sampled_from(list("ab '\n\t\r1é🤗?!") + ["'s", "'T", "\u00a0", "\u3000", "  "])


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_concatenation_as_reference(tok, tiktoken_enc, left, right):
    for text in (left + right, left + " " + right, left + "\n" + right):
        assert tok.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces_alphabet, max_size=12).map("".join), st.lists(_pieces_alphabet, max_size=12).map("".join))
def test_concatenation_at_whitespace_boundaries(tok, tiktoken_enc, left, right):
    text = left + right
    assert tok.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    # Where the reference splits between the two parts, so must we: ids(left + right) ==
    # ids(left) + ids(right) exactly when a piece boundary falls at the join.
    joined_like_parts = tiktoken_enc.encode_ordinary(left) + tiktoken_enc.encode_ordinary(right)
    assert (tok.encode_ordinary(left) + tok.encode_ordinary(right) == tok.encode_ordinary(text)) == (
        joined_like_parts == tiktoken_enc.encode_ordinary(text))


# ----------------------------------------------------------------------------- the CLI

def test_cli_tokenize(capsys):
    from minigpt2.cli import main
    assert main(["tokenize", "Hello world<|endoftext|>"]) == 0
    out = capsys.readouterr().out
    assert "15496" in out and "Ġworld" in out and "ids: [15496, 995, 50256]" in out
    assert main(["tokenize", "--ids", "--ordinary", "<|endoftext|>"]) == 0
    assert "50256" not in capsys.readouterr().out
    assert main(["tokenize", "--decode", "18435, 995"]) == 0
    assert capsys.readouterr().out == " Hello world\n"
    assert main(["tokenize", "--explain", "Hello"]) == 0
    assert "merge rank" in capsys.readouterr().out
    assert main(["tokenize", "--decode", "not ids"]) == 1
    assert "integer ids" in capsys.readouterr().err


def test_disallowed_special_raises_unless_explicitly_allowed(tok, tiktoken_enc):
    """issue 20.3, tiktoken's rule: a special token named in disallowed_special raises unless
    allowed_special names it explicitly; the default allowed_special does not count."""
    text = "a<|endoftext|>b"
    with pytest.raises(ValueError):
        tiktoken_enc.encode(text, disallowed_special="all")              # the oracle raises too
    for encode in (lambda **kw: tok.encode(text, **kw), lambda **kw: tok(text, **kw),
                   lambda **kw: tok(text, return_offsets_mapping=True, **kw), lambda **kw: tok.explain(text, **kw)):
        with pytest.raises(ValueError, match="special token '<\\|endoftext\\|>', which disallowed_special refuses"):
            encode(disallowed_special="all")
        with pytest.raises(ValueError, match="disallowed_special refuses"):
            encode(disallowed_special={"<|endoftext|>"})
    explicit = {"<|endoftext|>"}
    assert tok.encode(text, allowed_special=explicit, disallowed_special="all") == \
        tiktoken_enc.encode(text, allowed_special=explicit, disallowed_special="all")
    assert tok.encode(text, allowed_special="all", disallowed_special="all") == \
        tiktoken_enc.encode(text, allowed_special="all", disallowed_special="all")
    assert tok.encode(text) == tiktoken_enc.encode(text, allowed_special="all")      # the default is unchanged
    assert tok.encode("no special here", disallowed_special="all") == tiktoken_enc.encode("no special here")


def test_long_chunks_do_not_fill_the_cache(tiktoken_enc):
    """issue 20.7: the caches hold word-sized chunks; 20 distinct 50 kB texts without a space
    (one chunk each) kept ~6 MB in them, and 60 texts of 1 MB kept 812 MB."""
    import gc
    import tracemalloc

    fresh = GPT2Tokenizer.from_pretrained("gpt2")
    texts = [f"{i}" + "ab.cd," * 8_500 for i in range(20)]
    expected = [tiktoken_enc.encode_ordinary(text) for text in texts[:2]]
    fresh.clear_cache()
    fresh.encode("ab.cd,")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoded = [len(fresh.encode(text)) for text in texts]
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert encoded[:2] == [len(ids) for ids in expected]
    assert kept < 1_000_000, f"the caches kept {kept / 1e6:.1f} MB"
    assert fresh.encode(texts[0]) == expected[0] and fresh.encode(texts[1]) == expected[1]
