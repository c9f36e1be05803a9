"""Low-precision weights through the public API: from_pretrained(..., dtype=...), folders written
by quantize.save_converted, and the CLI's --dtype / `minigpt2 convert`.

Expected values: the float32 model on the same weights (drift bounded by the storage precision,
derived below), convert_model on the same weights (loading with dtype= must be that, bit for bit),
and for the CLI the library calls it stands for.
"""

from pathlib import Path

import numpy as np
import pytest

from minigpt2 import cli
from minigpt2.weights import hub
from minigpt2.bench import write_random_checkpoint
from minigpt2.config import GPT2Config
from minigpt2.generate import generate
from minigpt2.model import GPT2LMHeadModel, GPT2Model
from minigpt2.quantize import convert_model, save_converted
from minigpt2.weights.packed import DTYPES, PackedWeight
from minigpt2.scoring import score
from minigpt2.tokenizer import GPT2Tokenizer

STORAGES = DTYPES[1:]
HEAD_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "heads"
DEMO = "tiny-shakespeare"

# How far the logits may drift from float32, from the storage precision.
# u = the relative rounding error of one stored weight:
#   bfloat16 keeps 8 significant bits: u = 2**-8; float16 keeps 11: u = 2**-11;
#   int8 rounds to half a step of max|w| / 127 (per output channel), 1/254 of the channel's largest
#   weight; for N(0, s) weights the largest of 64..256 values is about 3 s, so u ~ 3/254 of a typical one.
# The rounding errors have random signs, so each matrix product is off by about u of its size, and
# the independent errors of the products on the path (4 per block + the LM head = 9 here) add in
# quadrature: sqrt(9) u. We allow twice that: the largest logit's error vs a typical weight's.
U = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11, "int8": 3 / 254}
N_PRODUCTS = 4 * 2 + 1
TOLERANCE = {storage: 2 * np.sqrt(N_PRODUCTS) * u for storage, u in U.items()}


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape and np.isfinite(a).all()
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random 2-layer model with O(1) activations (std 0.2), so every layer's rounding shows."""
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=64)
    return write_random_checkpoint(tmp_path_factory.mktemp("random"), config=config, std=0.2, seed=1)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, 512, size=(2, 24))


@pytest.fixture(scope="module")
def float32_logits(folder, ids):
    return GPT2LMHeadModel.from_pretrained(folder)(ids).logits


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("storage", STORAGES)
def test_dtype_at_load_is_convert_model(folder, ids, storage, backend):
    loaded = GPT2LMHeadModel.from_pretrained(folder, backend=backend, dtype=storage)
    converted = convert_model(GPT2LMHeadModel.from_pretrained(folder, backend=backend), storage)
    assert isinstance(loaded.transformer.h[1].mlp.c_proj.weight, PackedWeight)
    assert loaded.transformer.wte.weight.storage == storage and loaded.lm_head.weight is loaded.transformer.wte.weight
    np.testing.assert_array_equal(loaded(ids).logits, converted(ids).logits)


def test_every_dtype_stays_close_to_float32(folder, ids, float32_logits):
    drift = {storage: rel_err(GPT2LMHeadModel.from_pretrained(folder, dtype=storage)(ids).logits, float32_logits)
             for storage in STORAGES}
    for storage in STORAGES:
        assert 0 < drift[storage] < TOLERANCE[storage], (storage, drift[storage], TOLERANCE[storage])
    # and in the order of their precision
    assert drift["float16"] < drift["bfloat16"] < drift["int8"]


def test_body_alone_takes_dtype(folder, ids):
    body = GPT2Model.from_pretrained(folder, dtype="bfloat16")
    lm = GPT2LMHeadModel.from_pretrained(folder, dtype="bfloat16")
    assert isinstance(body.wte.weight, PackedWeight)
    np.testing.assert_array_equal(body(ids).last_hidden_state, lm.transformer(ids).last_hidden_state)


@pytest.mark.parametrize("spelling, storage", [
    ("bf16", "bfloat16"), ("fp16", "float16"), (np.float16, "float16"), (np.dtype("float16"), "float16"),
    (np.int8, "int8"), ("int8", "int8")])
def test_dtype_spellings(folder, spelling, storage):
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy", dtype=spelling)
    assert model.transformer.wte.weight.storage == storage


@pytest.mark.parametrize("spelling", ["float32", "fp32", np.float32, "auto", None])
def test_float32_spellings_leave_the_checkpoint_as_it_is(folder, ids, float32_logits, spelling):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=spelling)
    assert isinstance(model.transformer.wte.weight, np.ndarray) and model.transformer.wte.weight.dtype == np.float32
    np.testing.assert_array_equal(model(ids).logits, float32_logits)


def test_torch_dtypes(folder):
    torch = pytest.importorskip("torch")
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy", dtype=torch.bfloat16)
    assert model.transformer.wte.weight.storage == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float64)


@pytest.mark.parametrize("bad", ["fp8", "BFLOAT16", "float64", np.float64, 16, "int4"])
def test_bad_dtype_lists_the_choices(folder, bad):
    with pytest.raises(ValueError, match=r"dtype must be one of \('float32', 'bfloat16', 'float16', 'int8'\)") as error:
        GPT2LMHeadModel.from_pretrained(folder, dtype=bad)
    assert str(error.value).endswith(f"got {bad!r}")


def test_bad_dtype_fails_before_looking_for_the_model(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT2LMHeadModel.from_pretrained(tmp_path / "not-there", dtype="fp8")


@pytest.mark.parametrize("storage", STORAGES)
def test_save_converted_then_from_pretrained(folder, ids, storage, tmp_path):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=storage)
    save_converted(model, tmp_path)
    expected = model(ids).logits
    for dtype in ("auto", storage):                         # plain, and asking for what it holds
        loaded = GPT2LMHeadModel.from_pretrained(tmp_path, dtype=dtype)
        assert loaded.transformer.wte.weight.storage == storage
        np.testing.assert_array_equal(loaded(ids).logits, expected)
    body = GPT2Model.from_pretrained(tmp_path, backend="numpy")
    np.testing.assert_array_equal(body(ids).last_hidden_state,
                                  GPT2Model.from_pretrained(folder, backend="numpy", dtype=storage)(ids).last_hidden_state)
    # another type would mean re-quantizing packed values: refused, naming both
    for other in ("float32",) + tuple(s for s in STORAGES if s != storage):
        with pytest.raises(ValueError, match=f"holds {storage} weights .*not {other!r}"):
            GPT2LMHeadModel.from_pretrained(tmp_path, dtype=other)


def test_convert_model_refuses_to_requantize(folder):
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy", dtype="bfloat16")
    assert convert_model(model, "bf16") is model                    # what it holds: nothing to do
    with pytest.raises(ValueError, match="already holds bfloat16 weights"):
        convert_model(model, "int8")
    with pytest.raises(ValueError, match="already holds bfloat16 weights"):
        convert_model(model, "float32")


@pytest.mark.parametrize("name", ["seqcls", "double_heads"])
def test_heads_take_dtype(name):
    from minigpt2.heads import GPT2DoubleHeadsModel, GPT2ForSequenceClassification

    cls = {"seqcls": GPT2ForSequenceClassification, "double_heads": GPT2DoubleHeadsModel}[name]
    folder = HEAD_FIXTURES / name
    model = cls.from_pretrained(folder, backend="numpy")
    loaded = cls.from_pretrained(folder, backend="numpy", dtype="int8")
    converted = convert_model(cls.from_pretrained(folder, backend="numpy"), "int8")
    assert isinstance(loaded.transformer.h[0].attn.c_attn.weight, PackedWeight)
    if name == "seqcls":
        assert isinstance(loaded.score, np.ndarray)                  # the task head stays float32
        shape = (2, 7)
    else:
        assert loaded.lm_head.weight is loaded.transformer.wte.weight              # tied LM head packed with wte
        assert all(isinstance(a, np.ndarray) for a in loaded.multiple_choice_head.proj)
        shape = (2, 2, 7)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, size=shape)
    got, again, ref = loaded(ids), converted(ids), model(ids)
    np.testing.assert_array_equal(got.logits, again.logits)
    assert 0 < rel_err(got.logits, ref.logits) < TOLERANCE["int8"]              # 2 blocks, as above


# ---- the command line, on the bundled demo model ---------------------------------------------------

needs_demo = pytest.mark.skipif(DEMO not in hub.bundled_models(), reason="bundled demo model not present")


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@needs_demo
def test_cli_generate_dtype(capsys):
    prompt = "ROMEO:"
    model = GPT2LMHeadModel.from_pretrained(DEMO, dtype="bfloat16")
    tok = GPT2Tokenizer.from_pretrained(DEMO)
    ids = tok.encode(prompt)
    expected = generate(model, [ids], max_new_tokens=8, eos_token_id=tok.eos_token_id)[0, len(ids):]
    code, out, err = run_cli(capsys, "generate", prompt, "--model", DEMO, "--greedy", "--max-new-tokens", 8,
                             "--dtype", "bfloat16")
    assert code == 0, err
    assert out == prompt + tok.decode(expected) + "\n"


@needs_demo
def test_cli_score_dtype(capsys):
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    tok = GPT2Tokenizer.from_pretrained(DEMO)
    ppl = {dtype: score(GPT2LMHeadModel.from_pretrained(DEMO, dtype=dtype), tok.encode(text)).perplexity
           for dtype in ("float32", "int8")}
    code, out, err = run_cli(capsys, "score", "--text", text, "--model", DEMO, "--dtype", "int8")
    assert code == 0, err
    assert out.startswith(f"perplexity: {ppl['int8']:.4f}")
    assert ppl["int8"] != ppl["float32"]


def test_cli_rejects_a_bad_dtype(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "hi", "--dtype", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


@needs_demo
def test_cli_convert_then_generate(capsys, tmp_path):
    out_folder = tmp_path / "demo-int8"
    code, out, err = run_cli(capsys, "convert", DEMO, out_folder, "--dtype", "int8")
    assert code == 0, err
    assert "int8 weights" in out
    assert (out_folder / "vocab.json").is_file() and (out_folder / "merges.txt").is_file()
    loaded = GPT2LMHeadModel.from_pretrained(out_folder)
    assert loaded.transformer.wte.weight.storage == "int8"
    ids = [[11, 22, 33, 44]]
    np.testing.assert_array_equal(loaded(ids).logits, GPT2LMHeadModel.from_pretrained(DEMO, dtype="int8")(ids).logits)
    # the converted folder runs through --model, and refuses another --dtype with one line
    code, out, _ = run_cli(capsys, "generate", "ROMEO:", "--model", out_folder, "--greedy", "--max-new-tokens", 3)
    assert code == 0 and out.startswith("ROMEO:")
    code, _, err = run_cli(capsys, "generate", "ROMEO:", "--model", out_folder, "--dtype", "bfloat16")
    assert code == 1 and "holds int8 weights" in err and err.count("\n") == 1
    # `minigpt2 info` counts the same parameters as in the float32 folder (int8 scales are storage)
    code, original, _ = run_cli(capsys, "info", "--model", DEMO)
    code, converted, _ = run_cli(capsys, "info", "--model", out_folder)
    count = [line for line in original.splitlines() if line.startswith("parameters: ")][0]
    assert code == 0 and count.removesuffix(")") + ", stored as int8)" in converted
    # never over an existing model
    code, _, err = run_cli(capsys, "convert", DEMO, out_folder, "--dtype", "bfloat16")
    assert code == 1 and "already exists" in err
