"""KVCache: preallocated, written in place, HF tuple view; cached decoding == one full pass."""

import numpy as np
import pytest

from minigpt2.cache import KVCache
from minigpt2.model import GPT2LMHeadModel

from pathlib import Path

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

TINY = FIXTURES_DIR / "models" / "tiny"


@pytest.fixture(scope="module", params=["numpy", "numba"])
def model(request):
    return GPT2LMHeadModel.from_pretrained(TINY, backend=request.param)


def ids_for(model, shape, seed=0):
    return np.random.default_rng(seed).integers(0, model.config.vocab_size, shape)


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_update_writes_in_place_at_offset():
    cache = KVCache(n_layer=2, batch_size=1, n_head=2, head_dim=3, max_length=5)
    keys0 = cache.keys[0]
    k = np.ones((1, 2, 2, 3), np.float32)
    all_k, all_v = cache.update(0, k, 2 * k)
    assert all_k.shape == (1, 2, 2, 3) and np.shares_memory(all_k, keys0)
    cache.update(1, k, k)
    cache.advance(2)
    assert len(cache) == 2 and cache.get_seq_length() == 2
    all_k, all_v = cache.update(0, 3 * k[:, :, :1], k[:, :, :1])
    assert all_k.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(all_k[0, 0, :, 0], [1, 1, 3])
    assert cache.keys[0] is keys0                         # never reallocated
    key, value = cache[0]                                 # HF tuple view: only what was advanced
    assert key.shape == (1, 2, 2, 3) and value.shape == (1, 2, 2, 3)
    assert [k.shape for k, _ in cache] == [(1, 2, 2, 3)] * 2


def test_overflow_is_a_value_error():
    cache = KVCache(n_layer=1, batch_size=1, n_head=1, head_dim=2, max_length=3)
    cache.update(0, np.zeros((1, 1, 3, 2), np.float32), np.zeros((1, 1, 3, 2), np.float32))
    cache.advance(3)
    with pytest.raises(ValueError, match="overflow"):
        cache.update(0, np.zeros((1, 1, 1, 2), np.float32), np.zeros((1, 1, 1, 2), np.float32))


def test_decode_one_token_at_a_time_equals_full_pass(model):
    ids = ids_for(model, (2, 12))
    full = model(ids).logits
    out = model(ids[:, :1], use_cache=True)
    cache, pieces = out.past_key_values, [out.logits]
    assert isinstance(cache, KVCache) and len(cache) == 1
    keys0 = cache.keys[0]
    for i in range(1, 12):
        out = model(ids[:, i:i + 1], past_key_values=cache, use_cache=True)
        pieces.append(out.logits)
    assert cache.keys[0] is keys0                         # filled in place, no concatenation
    assert rel(np.concatenate(pieces, axis=1), full) <= 1e-5


def test_chunked_prefill_equals_full_pass(model):
    ids = ids_for(model, (1, 15), seed=1)
    full = model(ids).logits
    cache, pieces = None, []
    for start, stop in [(0, 3), (3, 5), (5, 10), (10, 15)]:
        out = model(ids[:, start:stop], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        pieces.append(out.logits)
    assert rel(np.concatenate(pieces, axis=1), full) <= 1e-5


def test_legacy_tuple_round_trip(model):
    ids = ids_for(model, (2, 8), seed=2)
    full = model(ids).logits
    cache = model(ids[:, :5], use_cache=True).past_key_values
    legacy = cache.to_legacy()
    assert len(legacy) == model.config.n_layer and legacy[0][0].shape == (2, model.config.n_head, 5, 8 * 2)
    out = model(ids[:, 5:], past_key_values=legacy, use_cache=True)
    assert isinstance(out.past_key_values, KVCache) and len(out.past_key_values) == 8
    assert rel(out.logits, full[:, 5:]) <= 1e-5


def test_cache_with_transformers_keys_matches():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(TINY).eval()
    ours = GPT2LMHeadModel.from_pretrained(TINY, backend="numpy")
    ids = np.arange(6)[None] * 7
    cache = ours(ids, use_cache=True).past_key_values
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids), use_cache=True).past_key_values
    for layer in range(ours.config.n_layer):
        key, value = cache[layer]
        ref_key, ref_value = ref.layers[layer].keys.numpy(), ref.layers[layer].values.numpy()
        assert rel(key, ref_key) <= 1e-5 and rel(value, ref_value) <= 1e-5


def assert_cache_equals(cache, fresh):
    """Every layer's keys and values of `cache` are those of `fresh` (a cache computed from scratch)."""
    assert len(cache) == len(fresh) and cache.batch_size == fresh.batch_size
    for layer in range(fresh.n_layer):
        (key, value), (fresh_key, fresh_value) = cache[layer], fresh[layer]
        assert rel(key, fresh_key) <= 1e-5, f"keys of layer {layer}"
        assert rel(value, fresh_value) <= 1e-5, f"values of layer {layer}"


def test_reorder_moves_keys_and_values_of_every_layer(model):
    """After reorder(rows) the cache is the one of the prompts in that order, and the next step's
    logits are a full pass over those prompts plus the new tokens."""
    ids, step = ids_for(model, (3, 6), seed=3), ids_for(model, (3, 1), seed=4)
    cache = model(ids, use_cache=True).past_key_values
    rows = [2, 0, 0]
    cache.reorder(rows)
    assert_cache_equals(cache, model(ids[rows], use_cache=True).past_key_values)
    logits = model(step, past_key_values=cache, use_cache=True).logits
    assert rel(logits[:, 0], model(np.concatenate([ids[rows], step], axis=1)).logits[:, -1]) <= 1e-5
    with pytest.raises(ValueError, match="beam_idx"):
        cache.reorder([0, 3])


def test_copy_is_independent_of_the_original(model):
    """A copy and its original decode different continuations, interleaved; each matches a full
    pass over its own tokens (a copy sharing an array with its original would overwrite it)."""
    ids = ids_for(model, (2, 5), seed=5)
    cache = model(ids, use_cache=True).past_key_values
    branch = cache.copy()
    for layer in range(cache.n_layer):
        assert not np.shares_memory(branch.keys[layer], cache.keys[layer])
        assert not np.shares_memory(branch.values[layer], cache.values[layer])
    tokens = {"original": ids_for(model, (2, 3), seed=6), "copy": ids_for(model, (2, 3), seed=7)}
    caches = {"original": cache, "copy": branch}
    logits = {"original": [], "copy": []}
    for i in range(3):
        for name in ("copy", "original"):
            out = model(tokens[name][:, i:i + 1], past_key_values=caches[name], use_cache=True)
            logits[name].append(out.logits)
    for name in ("original", "copy"):
        full = model(np.concatenate([ids, tokens[name]], axis=1)).logits[:, 5:]
        assert rel(np.concatenate(logits[name], axis=1), full) <= 1e-5, name


def test_crop_keeps_exactly_the_prefix(model):
    """crop(n) leaves the cache of the first n tokens; decoding on from there is a full pass over
    those n tokens and the new ones."""
    ids, new = ids_for(model, (2, 8), seed=8), ids_for(model, (2, 3), seed=9)
    cache = model(ids, use_cache=True).past_key_values
    cache.crop(5)
    assert_cache_equals(cache, model(ids[:, :5], use_cache=True).past_key_values)
    logits = model(new, past_key_values=cache, use_cache=True).logits
    assert rel(logits, model(np.concatenate([ids[:, :5], new], axis=1)).logits[:, 5:]) <= 1e-5
    assert len(cache) == 8
    with pytest.raises(ValueError, match="crop length"):
        cache.crop(9)


def test_past_n_positions_is_a_value_error(model):
    n = model.config.n_positions
    cache = model(ids_for(model, (1, n - 2)), use_cache=True).past_key_values
    cache = model(ids_for(model, (1, 2)), past_key_values=cache, use_cache=True).past_key_values
    assert len(cache) == n
    with pytest.raises(ValueError, match="n_positions"):
        model(ids_for(model, (1, 1)), past_key_values=cache, use_cache=True)
    assert len(cache) == n                                # a failed call leaves the cache as it was


def test_for_config_bounds(model):
    with pytest.raises(ValueError, match="max_length"):
        KVCache.for_config(model.config, 1, max_length=model.config.n_positions + 1)
    small = KVCache.for_config(model.config, 1, max_length=4)
    with pytest.raises(ValueError, match="overflow"):
        model(ids_for(model, (1, 5)), past_key_values=small, use_cache=True)
