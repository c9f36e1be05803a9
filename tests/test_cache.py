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


def test_reorder_copy_crop(model):
    ids = ids_for(model, (2, 6), seed=3)
    cache = model(ids, use_cache=True).past_key_values
    saved = cache.copy()
    cache.reorder([1, 1])
    np.testing.assert_array_equal(cache[0][0][0], saved[0][0][1])
    cache.crop(4)
    assert len(cache) == 4 and len(saved) == 6
    with pytest.raises(ValueError):
        cache.crop(5)


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
