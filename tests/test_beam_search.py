"""Beam search and the generate options of issue 19 against transformers' generate, live (random
models with spread-out weights, saved and loaded by minigpt2, both engines), then against the
committed fixture (no torch needed)."""

from pathlib import Path

import numpy as np
import pytest

from generation_helpers import noisy_hf_model

PROMPT = [5, 17, 42, 8, 8, 3]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(transformers model, {backend: minigpt2 model}) with the same random weights."""
    pytest.importorskip("transformers")
    from minigpt2 import GPT2LMHeadModel
    hf_model = noisy_hf_model(0)
    folder = tmp_path_factory.mktemp("hf-beams")
    hf_model.save_pretrained(folder)
    return hf_model, {b: GPT2LMHeadModel.from_pretrained(folder, backend=b) for b in ("numpy", "numba")}


def hf_generate(hf_model, ids, mask=None, **kwargs):
    import torch
    kwargs.setdefault("pad_token_id", 95)
    return hf_model.generate(torch.from_numpy(np.asarray(ids)), attention_mask=None if mask is None else torch.from_numpy(mask),
                             return_dict_in_generate=True, output_scores=True, **kwargs)


def common_eos(hf_model):
    """A token the free beams produce early, used as EOS so that hypotheses finish mid-search."""
    free = hf_generate(hf_model, [PROMPT], num_beams=4, max_new_tokens=12, eos_token_id=None, do_sample=False)
    return int(free.sequences[0, len(PROMPT) + 2])


BEAM_CASES = [
    dict(num_beams=4),
    dict(num_beams=4, num_return_sequences=4, length_penalty=0.5),
    dict(num_beams=3, early_stopping=True),
    dict(num_beams=3, early_stopping="never", length_penalty=2.0),
    dict(num_beams=3, early_stopping="never", length_penalty=-1.0),
    dict(num_beams=5, num_return_sequences=2, length_penalty=0.0),
    dict(num_beams=4, no_repeat_ngram_size=2),
    dict(num_beams=2, repetition_penalty=1.3, min_new_tokens=5),
]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", range(len(BEAM_CASES)))
@pytest.mark.parametrize("with_eos", [False, True])
def test_beam_search_equals_transformers(saved, backend, case, with_eos):
    hf_model, models = saved
    kwargs = dict(BEAM_CASES[case], max_new_tokens=18, eos_token_id=common_eos(hf_model) if with_eos else 95,
                  pad_token_id=95)
    expected = hf_generate(hf_model, [PROMPT], do_sample=False, **kwargs)
    ours = models[backend].generate([PROMPT], return_dict_in_generate=True, output_scores=True, **kwargs)
    np.testing.assert_array_equal(ours.sequences, expected.sequences.numpy())
    np.testing.assert_allclose(ours.sequences_scores, expected.sequences_scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours.beam_indices, expected.beam_indices.numpy())


def test_beam_search_left_padded_batch_equals_rows_alone(saved):
    hf_model, models = saved
    prompts = [[5, 17, 42, 8], [7], [3, 9, 11, 2, 60, 61]]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    eos = common_eos(hf_model)
    kwargs = dict(num_beams=3, num_return_sequences=2, max_new_tokens=15, eos_token_id=eos, pad_token_id=0,
                  no_repeat_ngram_size=3, repetition_penalty=1.2)
    batch = models["numba"].generate(ids, attention_mask=mask, **kwargs)
    for row, prompt in enumerate(prompts):
        alone = hf_generate(hf_model, [prompt], do_sample=False, **kwargs).sequences.numpy()   # [2, len]
        got = batch[2 * row : 2 * row + 2, width - len(prompt):]
        np.testing.assert_array_equal(got[:, : alone.shape[1]], alone)
        assert np.all(got[:, alone.shape[1]:] == 0)    # the row's batch ran longer: padding


def test_beam_search_decodes_the_beams_as_one_batch(saved):
    """One prefill over the prompt rows, then one call per step with all beams as rows of one batch."""
    _, models = saved
    model = models["numpy"]
    calls = []
    original = type(model).__call__

    class Counting(type(model)):
        def __call__(self, **kwargs):
            calls.append(kwargs["input_ids"].shape)
            return original(self, **kwargs)

    model.__class__ = Counting
    try:
        model.generate([PROMPT, PROMPT], num_beams=4, max_new_tokens=6, eos_token_id=None)
    finally:
        model.__class__ = Counting.__bases__[0]
    assert calls[0] == (2, len(PROMPT)) and calls[1:] == [(8, 1)] * 5


ALWAYS_ON = [
    dict(no_repeat_ngram_size=2),
    dict(bad_words_ids=[[11], [8, 3], [40, 41, 42]]),
    dict(sequence_bias={(11,): -3.0, (8, 3): 2.5, (3, 40): 4.0}),
    dict(suppress_tokens=[11, 40, 63]),
    dict(begin_suppress_tokens=[11, 40]),
    dict(forced_eos_token_id=7),
    dict(exponential_decay_length_penalty=(4, 1.5), eos_token_id=40),
    dict(min_length=12, eos_token_id=40),
    dict(renormalize_logits=True),
]


@pytest.mark.parametrize("case", range(len(ALWAYS_ON)))
@pytest.mark.parametrize("num_beams", [1, 3])
def test_processors_in_generate_equal_transformers(saved, case, num_beams):
    hf_model, models = saved
    kwargs = dict(dict(max_new_tokens=16, eos_token_id=95, pad_token_id=95, num_beams=num_beams), **ALWAYS_ON[case])
    expected = hf_generate(hf_model, [PROMPT], do_sample=False, output_logits=True, **kwargs)
    ours = models["numba"].generate([PROMPT], return_dict_in_generate=True, output_scores=True, output_logits=True,
                                    **kwargs)
    np.testing.assert_array_equal(ours.sequences, expected.sequences.numpy())
    for mine, theirs in zip(ours.scores, expected.scores):
        theirs = theirs.numpy()
        np.testing.assert_array_equal(np.isfinite(mine), np.isfinite(theirs))
        np.testing.assert_allclose(mine[np.isfinite(mine)], theirs[np.isfinite(theirs)], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.stack(ours.logits), np.stack([t.numpy() for t in expected.logits]), atol=1e-4)


def test_forced_bos_after_a_one_token_prompt(saved):
    hf_model, models = saved
    kwargs = dict(max_new_tokens=8, eos_token_id=95, forced_bos_token_id=13, begin_suppress_tokens=[50])
    expected = hf_generate(hf_model, [[7]], do_sample=False, **kwargs).sequences.numpy()
    ours = models["numba"].generate([[7]], **kwargs)
    assert ours[0, 1] == 13
    np.testing.assert_array_equal(ours, expected)


def test_max_length_counts_the_prompt(saved):
    hf_model, models = saved
    expected = hf_generate(hf_model, [PROMPT], do_sample=False, max_length=15, eos_token_id=None).sequences.numpy()
    ours = models["numba"].generate([PROMPT], max_length=15, eos_token_id=None)
    assert ours.shape == (1, 15)
    np.testing.assert_array_equal(ours, expected)
    # max_new_tokens wins over max_length, as in transformers
    assert models["numba"].generate([PROMPT], max_length=15, max_new_tokens=3, eos_token_id=None).shape == (1, 9)


def test_beam_sampling_is_seeded_and_keeps_the_finished_best(saved):
    _, models = saved
    kwargs = dict(num_beams=3, do_sample=True, top_k=20, temperature=0.9, max_new_tokens=12, eos_token_id=None,
                  num_return_sequences=3, return_dict_in_generate=True, output_scores=True)
    a = models["numba"].generate([PROMPT], seed=3, **kwargs)
    b = models["numba"].generate([PROMPT], seed=3, **kwargs)
    c = models["numba"].generate([PROMPT], seed=4, **kwargs)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert not np.array_equal(a.sequences, c.sequences)
    assert np.all(np.diff(a.sequences_scores) <= 0)          # best first
    # each score is the sum of its tokens' processed log-probs / length (length_penalty 1)
    steps = np.stack(a.scores)                                # [steps, beams, vocab]
    for row in range(3):
        tokens = a.sequences[row, len(PROMPT):]
        beams = a.beam_indices[row]
        total = sum(steps[t, beams[t], tokens[t]] for t in range(len(tokens)))
        assert a.sequences_scores[row] == pytest.approx(total / len(tokens), rel=1e-4)


def test_sampling_num_return_sequences_and_dict_output(saved):
    _, models = saved
    out = models["numba"].generate([PROMPT, PROMPT[::-1]], do_sample=True, seed=0, num_return_sequences=3,
                                   max_new_tokens=5, eos_token_id=None, min_p=0.05, typical_p=0.9,
                                   epsilon_cutoff=1e-4, eta_cutoff=1e-3, return_dict_in_generate=True,
                                   output_scores=True, output_logits=True)
    assert out.sequences.shape == (6, len(PROMPT) + 5)
    assert len(out.scores) == 5 and out.scores[0].shape == (6, 96) and len(out.logits) == 5
    for step, scores in enumerate(out.scores):                # every drawn token was allowed
        assert np.isfinite(scores[np.arange(6), out.sequences[:, len(PROMPT) + step]]).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=0), "num_beams must be an integer >= 1"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences .3. must be <= num_beams .2."),
    (dict(num_return_sequences=2), "num_beams >= num_return_sequences, or do_sample=True"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer >= 0"),
    (dict(bad_words_ids=[[3], []]), r"bad_words_ids: each entry must be a non-empty list of token ids \(length >= 1\)"),
    (dict(bad_words_ids=[[3, -2]]), "bad_words_ids must be"),
    (dict(early_stopping="sometimes", num_beams=2), "early_stopping must be True, False or 'never'"),
    (dict(length_penalty=float("nan"), num_beams=2), "length_penalty must be a finite number"),
    (dict(sequence_bias={(3,): "a lot"}), "every bias must be a number"),
    (dict(exponential_decay_length_penalty=(2,)), "exponential_decay_length_penalty must be .start, factor."),
    (dict(typical_p=0.0, do_sample=True), "typical_p must be in"),
    (dict(max_length=3), "max_length .3. is below the prompt length"),
    (dict(forced_bos_token_id=500), r"forced_bos_token_id must be one id in \[0, 96\)"),
    (dict(num_beams=2, stop="x", tokenizer=object()), "num_beams=1"),
    (dict(nonsense=1), "unknown arguments"),
])
def test_bad_generation_settings_say_what_to_pass(saved, kwargs, message):
    _, models = saved
    with pytest.raises(ValueError, match=message):
        models["numpy"].generate([PROMPT], **kwargs)


# ---------------------------------------------------------------- the committed fixture (no torch needed)
# tests/fixtures/make_generation_fixtures.py wrote transformers' beam search outputs.


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fixture_beam_search_equals_transformers(backend):
    import sys

    from conftest import FIXTURES_DIR
    from minigpt2 import GPT2LMHeadModel
    sys.path.insert(0, str(FIXTURES_DIR))
    from make_generation_fixtures import BATCH_PROMPTS, BEAM_BATCH, BEAM_CASES
    folder = FIXTURES_DIR / "generation"
    ref = dict(np.load(folder / "reference.npz"))
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)
    for i, case in enumerate(BEAM_CASES):
        out = model.generate([PROMPT], max_new_tokens=18, pad_token_id=95, return_dict_in_generate=True,
                             output_scores=True, **case)
        np.testing.assert_array_equal(out.sequences, ref[f"beam_{i}_sequences"], err_msg=str(case))
        np.testing.assert_allclose(out.sequences_scores, ref[f"beam_{i}_scores"], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out.beam_indices, ref[f"beam_{i}_indices"])
    # the cases exercise finished hypotheses: some end at EOS, before max_new_tokens
    assert ref["beam_4_sequences"].shape[1] < len(PROMPT) + 18 and ref["beam_5_sequences"].shape[1] < len(PROMPT) + 18
    width = max(map(len, BATCH_PROMPTS))
    ids = np.array([[0] * (width - len(p)) + p for p in BATCH_PROMPTS])
    mask = (ids != 0) | (np.arange(width) >= width - np.array([len(p) for p in BATCH_PROMPTS])[:, None])
    batch = model.generate(ids, attention_mask=mask.astype(int), pad_token_id=0, **BEAM_BATCH)
    for row, prompt in enumerate(BATCH_PROMPTS):
        alone = ref[f"beam_batch_{row}"]
        got = batch[2 * row : 2 * row + 2, width - len(prompt):]
        np.testing.assert_array_equal(got[:, : alone.shape[1]], alone)
        assert np.all(got[:, alone.shape[1]:] == 0)


# ---------------------------------------------------------------- generation_config.json, pipeline, names


def test_generation_config_json_gives_the_defaults_transformers_reads(tmp_path):
    """A folder's generation_config.json, written by transformers, sets generate's defaults for both."""
    import shutil

    import torch
    import transformers
    from minigpt2 import GenerationConfig, GPT2LMHeadModel
    hf_model = noisy_hf_model(0)
    hf_model.save_pretrained(tmp_path)
    transformers.GenerationConfig(num_beams=3, no_repeat_ngram_size=2, max_new_tokens=12, length_penalty=0.6,
                                  eos_token_id=57, pad_token_id=95, bos_token_id=95).save_pretrained(tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).generate(torch.tensor([PROMPT])).numpy()
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert model.generation_config.num_beams == 3
    np.testing.assert_array_equal(model.generate([PROMPT]), theirs)
    # an argument still wins over the file
    assert model.generate([PROMPT], num_beams=1, max_new_tokens=4).shape == (1, len(PROMPT) + 4)
    # ours round-trips and transformers reads what we write
    ours = GenerationConfig.from_pretrained(tmp_path)
    ours.top_k = 7
    out = tmp_path / "again"
    ours.save_pretrained(out)
    read_back = transformers.GenerationConfig.from_pretrained(out)
    assert (read_back.num_beams, read_back.no_repeat_ngram_size, read_back.top_k, read_back.length_penalty) == (3, 2, 7, 0.6)
    assert GenerationConfig.from_pretrained(out).to_dict() == ours.to_dict()
    shutil.rmtree(out)
    with pytest.raises(ValueError, match="generation_config.json does not exist"):
        GenerationConfig.from_pretrained(out)


def test_pipeline_equals_transformers_pipeline():
    import transformers
    import minigpt2
    from minigpt2.generation_config import GenerationConfig  # noqa: F401  (import order: package first)
    DEMO_MODEL_DIR = Path(minigpt2.__file__).parent / "models" / "tiny-shakespeare"
    theirs = transformers.pipeline("text-generation", model=str(DEMO_MODEL_DIR), device="cpu")
    ours = minigpt2.pipeline("text-generation", model=str(DEMO_MODEL_DIR))
    prompts = ["ROMEO:\nWhat", "First Citizen:"]
    for kwargs in (dict(max_new_tokens=20, do_sample=False),
                   dict(max_new_tokens=15, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2, do_sample=False),
                   dict(max_new_tokens=10, do_sample=False, return_full_text=False)):
        expected = theirs(prompts, **kwargs)
        assert ours(prompts, **kwargs) == expected
        assert ours(prompts[0], **kwargs) == expected[0]
    # transformers' pipeline defaults (256 new tokens, sampling at temperature 0.7) fill what is not set
    assert ours.generate_kwargs({}) == {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
    assert ours.generate_kwargs({"do_sample": False, "max_length": 30}) == {"do_sample": False, "max_length": 30}
    with pytest.raises(ValueError, match="text-generation"):
        minigpt2.pipeline("summarization", model=str(DEMO_MODEL_DIR))


def test_gpt2_tokenizer_fast_is_the_same_tokenizer():
    import minigpt2
    from minigpt2.tokenizer import GPT2Tokenizer, GPT2TokenizerFast
    assert minigpt2.GPT2TokenizerFast is GPT2TokenizerFast is GPT2Tokenizer
    assert GPT2TokenizerFast.from_pretrained("gpt2").encode("Hello world") == [15496, 995]


@pytest.mark.parametrize("shape", [dict(n_embd=48, n_head=3, n_layer=3, vocab_size=97),
                                   dict(n_embd=20, n_head=5, n_layer=1, vocab_size=131)])
def test_beam_search_on_odd_shapes_with_padding(shape, tmp_path):
    """Odd shapes (head_dim 16 or 4, an odd vocabulary), a left-padded batch, both engines. (The
    committed std-0.02 fixture models give nearly flat distributions: engines may split ties
    differently there, so these models have spread-out weights as noisy_hf_model makes them.)"""
    import torch
    from minigpt2 import GPT2LMHeadModel
    hf_model = noisy_hf_model(11, **shape)
    hf_model.save_pretrained(tmp_path)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [0, 0, 7, 0, 27, 18, 28, 5]]
    mask = np.array([[1] * 8, [0, 0] + [1] * 6])
    kwargs = dict(num_beams=4, num_return_sequences=2, max_new_tokens=10, no_repeat_ngram_size=2,
                  length_penalty=0.8, eos_token_id=None, pad_token_id=0)
    for backend in ("numpy", "numba"):
        model = GPT2LMHeadModel.from_pretrained(tmp_path, backend=backend)
        ours = model.generate(np.array(prompts), attention_mask=mask, return_dict_in_generate=True,
                              output_scores=True, **kwargs)
        for row in range(2):
            prompt = np.array(prompts[row])[mask[row] == 1]
            # an explicit mask: else transformers masks the prompt's 0s (== pad_token_id) out
            theirs = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                       do_sample=False, return_dict_in_generate=True, output_scores=True, **kwargs)
            np.testing.assert_array_equal(ours.sequences[2 * row : 2 * row + 2, mask.shape[1] - len(prompt):],
                                          theirs.sequences.numpy())
            np.testing.assert_allclose(ours.sequences_scores[2 * row : 2 * row + 2], theirs.sequences_scores.numpy(),
                                       rtol=1e-4)


@pytest.mark.parametrize("name", ["odd", "tiny", "inverse_layer_idx", "reorder_upcast", "gelu_fast", "unscaled",
                                  "tanh", "gelu_pytorch_tanh"])
def test_beam_search_on_the_committed_random_models(name):
    import torch
    import transformers
    from conftest import FIXTURES_DIR
    from minigpt2 import GPT2LMHeadModel
    folder = FIXTURES_DIR / "models" / name
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    prompt = [7, 0, 27, 18, 28, 5]
    kwargs = dict(num_beams=4, num_return_sequences=2, max_new_tokens=10, no_repeat_ngram_size=2,
                  length_penalty=0.8, eos_token_id=None, pad_token_id=0)
    expected = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=False, **kwargs).numpy()
    for backend in ("numpy", "numba"):
        np.testing.assert_array_equal(GPT2LMHeadModel.from_pretrained(folder, backend=backend).generate([prompt], **kwargs),
                                      expected)
