"""The numba backend computes the same logits as the numpy backend, in every path the kernels take:
prefill (BLAS + fused bias/GELU), decode steps over the KV cache (the streaming matrix-vector
kernels, batch 1 and batched, padded), and `logits_to_keep`.

The numpy backend is itself held to transformers in test_model_vs_hf.py.
"""

from pathlib import Path

import numpy as np
import pytest

from minigpt2 import engine
from minigpt2.engine import policy
from minigpt2.model import GPT2LMHeadModel

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
TOL = 1e-5


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape and np.isfinite(a).all()
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module", params=["tiny", "odd"])
def models(request):
    folder = FIXTURES / request.param
    return (GPT2LMHeadModel.from_pretrained(folder, backend="numpy"),
            GPT2LMHeadModel.from_pretrained(folder, backend="numba"))


def ids_for(model, b, t, seed):
    return np.random.default_rng(seed).integers(0, model.config.vocab_size, size=(b, t))


@pytest.mark.parametrize("t", [1, 7, policy.MATVEC_MAX_ROWS, policy.MATVEC_MAX_ROWS + 1, 33])
def test_full_pass_same_logits(models, t):
    numpy_model, numba_model = models
    ids = ids_for(numpy_model, 2, t, seed=t)
    assert rel_err(numba_model(ids).logits, numpy_model(ids).logits) < TOL


def test_cached_decode_same_logits_batched_and_left_padded(models):
    numpy_model, numba_model = models
    b, prompt, steps = 3, 5, 6
    ids = ids_for(numpy_model, b, prompt + steps, seed=1)
    mask = np.ones((b, prompt + steps), np.int64)
    mask[1, :2] = 0                                     # row 1 is left-padded
    outs = {}
    for name, model in (("numpy", numpy_model), ("numba", numba_model)):
        out = model(ids[:, :prompt], attention_mask=mask[:, :prompt], use_cache=True)
        logits = [out.logits[:, -1]]
        for step in range(prompt, prompt + steps):      # one token at a time: the decode kernels
            out = model(ids[:, step:step + 1], attention_mask=mask[:, :step + 1],
                        past_key_values=out.past_key_values, use_cache=True)
            logits.append(out.logits[:, -1])
        outs[name] = np.stack(logits)
    assert rel_err(outs["numba"], outs["numpy"]) < TOL


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_logits_to_keep(models, backend):
    model = models[0] if backend == "numpy" else models[1]
    ids = ids_for(model, 2, 9, seed=3)
    full = model(ids).logits
    last = model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, model.config.vocab_size)
    assert rel_err(last[:, 0], full[:, -1]) < TOL     # BLAS may sum a 1-row product in another order
    assert model(ids, logits_to_keep=3).logits.shape == (2, 3, model.config.vocab_size)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, logits_to_keep=-1)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("keep", [1, 3])
def test_logits_to_keep_runs_the_last_block_on_kept_rows_only(models, backend, keep, monkeypatch):
    """With logits_to_keep, the last block computes its MLP for the kept rows only; the logits,
    the filled cache and the decode step after it are those of a full pass (left padding too)."""
    model = models[0] if backend == "numpy" else models[1]
    b, t = 2, 40                                   # 40 rows: the BLAS attention path in prefill
    ids = ids_for(model, b, t + 1, seed=4)
    mask = np.ones((b, t + 1), np.int64)
    mask[1, :5] = 0
    full = model(ids[:, :t], attention_mask=mask[:, :t], use_cache=True)
    module, rows_seen = model.transformer.ops, []
    original = module.layer_norm
    monkeypatch.setattr(module, "layer_norm", lambda x, *a: rows_seen.append(x.shape[1]) or original(x, *a))
    kept = model(ids[:, :t], attention_mask=mask[:, :t], use_cache=True, logits_to_keep=keep)
    monkeypatch.undo()
    # ln_1 of every block sees all t rows; ln_2 of the last block and ln_f only the kept ones
    assert rows_seen == [t, t] * (model.config.n_layer - 1) + [t, keep, keep]
    assert kept.logits.shape == (b, keep, model.config.vocab_size)
    assert rel_err(kept.logits, full.logits[:, -keep:]) < TOL
    for layer in range(model.config.n_layer):                  # every position's keys and values
        for a, c in zip(full.past_key_values[layer], kept.past_key_values[layer]):
            np.testing.assert_array_equal(a, c)
    steps = [model(ids[:, t:], attention_mask=mask, past_key_values=out.past_key_values).logits
             for out in (full, kept)]
    assert rel_err(steps[1], steps[0]) < TOL
    with pytest.raises(ValueError, match="rows_to_keep"):
        model.transformer(ids, rows_to_keep=-2)
