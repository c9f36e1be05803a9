"""engine.DecodeStep: a batch-1 decode step through every block in one compiled call.

It must give exactly the numbers of the route through the ops (the blocks of model.py, one op at a
time), which the oracle tests check against transformers; it must be taken where it applies and
left where it does not; and it must follow the model's weights when they are replaced.
"""

import numpy as np
import pytest

from minigpt2 import GPT2Config, GPT2LMHeadModel
from minigpt2.bench import write_random_checkpoint
from minigpt2.cache import KVCache
from minigpt2.engine import decode_step
from minigpt2.quantize import convert_model

# n_embd 160: int8 matrices of more and fewer than 2**16 weights (c_fc 640 x 160, c_proj 160 x 160)
CONFIG = dict(n_embd=160, n_layer=3, n_head=5, vocab_size=500, n_positions=64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("decode_step"), config=GPT2Config(**CONFIG), std=0.2)


@pytest.fixture
def calls(monkeypatch):
    """Counts decode_body calls (the fused step), passing them through."""
    count = {"n": 0}
    original = decode_step.decode_body

    def counting(*args):
        count["n"] += 1
        return original(*args)
    monkeypatch.setattr(decode_step, "decode_body", counting)
    return count


def greedy_logits(model, prompt, steps, fused, **kwargs):
    """The logits of `steps` greedy decode steps after `prompt`, fused or through the ops."""
    model.transformer.fused_decode = fused
    out = model(prompt, use_cache=True, **kwargs)
    cache, token, logits = out.past_key_values, out.logits[:, -1].argmax(-1)[:, None], []
    for _ in range(steps):
        out = model(token, past_key_values=cache, use_cache=True)
        logits.append(out.logits[:, -1])
        token = out.logits[:, -1].argmax(-1)[:, None]
    return np.stack(logits), cache


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
def test_fused_step_equals_the_ops_route(folder, dtype, calls):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=dtype)
    prompt = np.random.default_rng(0).integers(0, 500, (1, 7))
    fused, fused_cache = greedy_logits(model, prompt, 12, fused=True)
    assert calls["n"] == 12
    by_ops, ops_cache = greedy_logits(model, prompt, 12, fused=False)
    assert calls["n"] == 12                                 # fused_decode=False: not called again
    np.testing.assert_array_equal(fused, by_ops)
    assert len(fused_cache) == len(ops_cache) == 7 + 12
    for layer in range(CONFIG["n_layer"]):                 # the cache got the same keys and values
        np.testing.assert_array_equal(fused_cache[layer][0], ops_cache[layer][0])
        np.testing.assert_array_equal(fused_cache[layer][1], ops_cache[layer][1])


def test_a_long_context_takes_the_ops_route(folder, calls, monkeypatch):
    # decode_body runs the serial attention only: past policy.SERIAL_MAX_ELEMENTS (here lowered to
    # contexts of up to 10 tokens: 5 heads x 10 x 32 / 4 = 400) the step goes through the ops,
    # whose attention is threaded, and the numbers stay the same
    from minigpt2.engine import policy
    model = GPT2LMHeadModel.from_pretrained(folder, dtype="int8")
    prompt = np.random.default_rng(1).integers(0, 500, (1, 7))
    expected, _ = greedy_logits(model, prompt, 8, fused=False)
    monkeypatch.setattr(policy, "SERIAL_MAX_ELEMENTS", 400)
    got, _ = greedy_logits(model, prompt, 8, fused=True)
    assert calls["n"] == 3                                  # contexts of 8, 9 and 10 tokens
    np.testing.assert_array_equal(got, expected)


def test_where_the_fused_step_does_not_apply(folder, calls):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype="bfloat16")
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, 500, (2, 4))
    out = model(prompt, use_cache=True)                     # two sequences
    model(out.logits[:, -1].argmax(-1)[:, None], past_key_values=out.past_key_values, use_cache=True)
    out = model(prompt[:1], use_cache=True)                 # a padded key
    model(np.array([[3]]), past_key_values=out.past_key_values, attention_mask=np.array([[0, 1, 1, 1, 1]]))
    out = model(prompt[:1], use_cache=True)                 # inspected: attentions, hidden states, trace
    step = model(np.array([[3]]), past_key_values=out.past_key_values.copy(), output_attentions=True)
    assert step.attentions is not None and len(step.attentions) == CONFIG["n_layer"]
    model(np.array([[3]]), past_key_values=out.past_key_values.copy(), output_hidden_states=True)
    model(np.array([[3]]), past_key_values=out.past_key_values.copy(), trace={})
    model(np.array([[3]]), past_key_values=out.past_key_values.copy(), head_mask=np.ones(CONFIG["n_head"]))
    assert calls["n"] == 0
    float32_model = GPT2LMHeadModel.from_pretrained(folder)   # float32 weights: BLAS, through the ops
    out = float32_model(prompt[:1], use_cache=True)
    float32_model(np.array([[3]]), past_key_values=out.past_key_values)
    assert calls["n"] == 0
    model(np.array([[3]]), past_key_values=out.past_key_values)   # and an all-ones mask is fused
    model(np.array([[3]]), past_key_values=out.past_key_values, attention_mask=np.ones((1, 7), dtype=int))
    assert calls["n"] == 2


def test_the_fused_step_follows_replaced_weights(folder, calls):
    # built for the float32 weights (not supported), then the model is converted in place
    model = GPT2LMHeadModel.from_pretrained(folder)
    prompt = np.random.default_rng(3).integers(0, 500, (1, 5))
    greedy_logits(model, prompt, 2, fused=True)
    assert calls["n"] == 0
    convert_model(model, "int8")
    got, _ = greedy_logits(model, prompt, 4, fused=True)
    assert calls["n"] == 4
    expected, _ = greedy_logits(GPT2LMHeadModel.from_pretrained(folder, dtype="int8"), prompt, 4, fused=False)
    np.testing.assert_array_equal(got, expected)
    # one block matrix replaced by hand: the step is rebuilt from the new one
    block = model.transformer.h[1]
    new_weight = np.random.default_rng(4).normal(0, 0.2, (160, 640)).astype(np.float32)
    block.mlp.c_fc.weight = type(block.mlp.c_fc.weight).pack(new_weight, "int8")
    got, _ = greedy_logits(model, prompt, 3, fused=True)
    expected, _ = greedy_logits(model, prompt, 3, fused=False)
    np.testing.assert_array_equal(got, expected)


def test_a_full_cache_is_the_same_error(folder):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype="int8")
    cache = KVCache.for_config(model.config, 1, max_length=4)
    model(np.arange(4)[None], past_key_values=cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model(np.array([[1]]), past_key_values=cache)
    assert len(cache) == 4
