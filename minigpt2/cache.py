"""KVCache: the keys and values of every token seen so far, so the next token need not recompute them.

Without a cache, generating token n re-runs the model over all n tokens. With one, each step feeds
only the new token(s): every layer computes its key and value once, writes them into the cache at
offset ``len(cache)``, and attends over ``cache[:len(cache) + t]``.

The arrays are preallocated once, per layer ``[batch, n_head, max_length, head_dim]``, and written
in place (no concatenation per step, so a step costs the same at token 10 and token 1000).

    cache[layer] -> (key [b, h, length, d], value [b, h, length, d])   # HF-style tuple view
    len(cache)   -> number of tokens stored
"""

import numpy as np


class KVCache:
    """Preallocated per-layer key/value arrays, filled left to right."""

    def __init__(self, n_layer, batch_size, n_head, head_dim, max_length, dtype=np.float32):
        shape = (batch_size, n_head, max_length, head_dim)
        # np.zeros asks the OS for zeroed pages: memory is only touched as the cache fills up.
        self.keys = [np.zeros(shape, dtype) for _ in range(n_layer)]
        self.values = [np.zeros(shape, dtype) for _ in range(n_layer)]
        self.max_length = max_length
        self.length = 0                    # tokens stored; the next ones go at this offset

    @classmethod
    def for_config(cls, config, batch_size, max_length=None):
        """An empty cache for ``config``; ``max_length`` defaults to n_positions."""
        max_length = config.n_positions if max_length is None else max_length
        if not 0 < max_length <= config.n_positions:
            raise ValueError(f"KVCache max_length must be in 1..n_positions ({config.n_positions}), "
                             f"got {max_length}")
        return cls(config.n_layer, batch_size, config.n_head, config.head_dim, max_length)

    @classmethod
    def from_legacy(cls, past_key_values, max_length):
        """Copy a transformers-style tuple ((key, value) per layer, each [b, h, s, d]) into a cache."""
        key0 = np.asarray(past_key_values[0][0])
        if key0.ndim != 4:
            raise ValueError(f"past_key_values: each key must be [batch, n_head, length, head_dim], "
                             f"got shape {key0.shape}")
        b, h, s, d = key0.shape
        if s > max_length:
            raise ValueError(f"past_key_values hold {s} tokens, more than max_length {max_length}")
        cache = cls(len(past_key_values), b, h, d, max_length)
        for layer, (key, value) in enumerate(past_key_values):
            key, value = np.asarray(key), np.asarray(value)
            if key.shape != (b, h, s, d) or value.shape != (b, h, s, d):
                raise ValueError(f"past_key_values[{layer}]: key {key.shape} and value {value.shape} "
                                 f"must both be {(b, h, s, d)}")
            cache.keys[layer][:, :, :s] = key
            cache.values[layer][:, :, :s] = value
        cache.length = s
        return cache

    # ---- the view transformers users expect --------------------------------------------------
    def __len__(self):
        return self.length

    def __getitem__(self, layer):
        """(key, value) of one layer, each [b, h, length, d] (views, not copies)."""
        return (self.keys[layer][:, :, :self.length], self.values[layer][:, :, :self.length])

    def __iter__(self):
        return (self[layer] for layer in range(self.n_layer))

    def to_legacy(self):
        """A tuple of (key, value) per layer, copied: HF's old ``past_key_values`` format."""
        return tuple((k.copy(), v.copy()) for k, v in self)

    @property
    def n_layer(self):
        return len(self.keys)

    @property
    def batch_size(self):
        return self.keys[0].shape[0]

    def get_seq_length(self):
        """The transformers Cache spelling of ``len(cache)``."""
        return self.length

    # ---- writing -------------------------------------------------------------------------------
    def check_room(self, n_new):
        """Raise ValueError unless ``n_new`` more tokens fit."""
        if self.length + n_new > self.max_length:
            raise ValueError(f"KV cache overflow: {self.length} cached + {n_new} new tokens > "
                             f"max_length {self.max_length} (the model's n_positions caps how many "
                             f"positions exist; crop the prompt or start a new cache)")

    def update(self, layer, key, value):
        """Write this step's key/value [b, h, t, d] at offset ``length``; return all of them so far.

        The returned arrays are views [b, h, length + t, d]. ``length`` itself moves only in
        ``advance``, once every layer has written its part of the step.
        """
        t = key.shape[2]
        self.check_room(t)
        start = self.length
        self.keys[layer][:, :, start:start + t] = key
        self.values[layer][:, :, start:start + t] = value
        return self.keys[layer][:, :, :start + t], self.values[layer][:, :, :start + t]

    def advance(self, n_new):
        """Mark ``n_new`` more tokens as stored (call after every layer has written them)."""
        self.check_room(n_new)
        self.length += n_new

    # ---- beam search / branching -----------------------------------------------------------------
    def reorder(self, beam_idx):
        """Keep the batch rows ``beam_idx`` (in that order; a row may repeat), as beam search needs after each step."""
        beam_idx = np.asarray(beam_idx)
        batch = self.batch_size
        # a negative index would silently pick a row from the end, a bool array would act as a mask
        if (beam_idx.ndim != 1 or beam_idx.dtype == bool or not np.issubdtype(beam_idx.dtype, np.integer)
                or (beam_idx.size and (beam_idx.min() < 0 or beam_idx.max() >= batch))):
            raise ValueError(f"beam_idx must be a 1-D list of row indices in 0..{batch - 1}, got {beam_idx.tolist()!r}")
        if beam_idx.size == batch:
            # beam search, every step: copy only the filled part, in place
            if np.array_equal(beam_idx, np.arange(batch)):
                return
            n = self.length
            for array in self.keys + self.values:
                array[:, :, :n] = array[beam_idx, :, :n]
        else:
            # a new batch size (one prompt row -> its beams): new arrays
            self.keys = [k[beam_idx] for k in self.keys]
            self.values = [v[beam_idx] for v in self.values]

    def crop(self, length):
        """Forget everything after the first ``length`` tokens."""
        if not 0 <= length <= self.length:
            raise ValueError(f"crop length must be in 0..{self.length}, got {length}")
        self.length = length

    def copy(self):
        """An independent copy (the model writes into a cache in place)."""
        return self._over([k.copy() for k in self.keys], [v.copy() for v in self.values])

    def first_rows(self, n):
        """A cache over batch rows 0..n-1 of this one, sharing its arrays (rows of a C-contiguous
        array are contiguous views): what the model writes through it lands in this cache."""
        return self._over([k[:n] for k in self.keys], [v[:n] for v in self.values])

    def _over(self, keys, values):
        # a KVCache holding the given per-layer arrays, at this cache's length (nothing allocated)
        new = KVCache.__new__(KVCache)
        new.keys, new.values = keys, values
        new.max_length, new.length = self.max_length, self.length
        return new

    def __repr__(self):
        b, h, _, d = self.keys[0].shape
        return (f"KVCache(n_layer={self.n_layer}, batch={b}, n_head={h}, head_dim={d}, "
                f"length={self.length}, max_length={self.max_length})")
