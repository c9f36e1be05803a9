"""attention as Numba kernels: the same function as ``ops.attention`` (masked, scaled
dot-product attention over the heads), with masked keys skipped rather than filled.

Paths (``policy.py`` holds the thresholds):
* AMX tiles (``amx.attention``): matmul precision "medium" on a CPU with AMX, a prefill, head_dim
  a multiple of 32 and no attention probabilities asked for; bfloat16 products, float32 sums.
* BLAS (``_attention_blas``): ATTENTION_BLAS_MIN_ROWS+ query rows (a prefill). q.k and probs.v by
  BLAS in blocks of query rows that stop at the last visible key, a Numba masked softmax between.
* the looped kernel (``attention_heads``): a decode step or a short prompt. One (batch, head)
  pair per task, numbered passes per query row (llm.c style) over the visible keys only, so a
  padded key never touches a real row; serial next to BLAS, threaded otherwise.
"""

import numpy as np
from numba import njit, prange

from minigpt2.engine import amx, policy
from minigpt2.engine.jit import REDUCE, as_vector, exp, ones, row_max, threaded_and_serial, visible_extent


@njit(inline="always")
def _softmax_visible_row(x, row_mask, maxval, head_scale):
    # x [s] scaled scores, row_mask [s], maxval = their max over the visible keys -> x in place:
    # pass 2: exp(score - max) and the sum, masked keys set to exactly 0;
    # pass 3: normalise (and apply the head mask, which HF multiplies after softmax).
    # Inlined into its callers, so it compiles with their fast-math flags.
    total = np.float32(0.0)
    for j in range(x.shape[0]):
        if row_mask[j]:
            e = exp(x[j] - maxval)
            x[j] = e
            total += e
        else:
            x[j] = 0.0
    factor = head_scale / total
    for j in range(x.shape[0]):
        x[j] *= factor


@threaded_and_serial(fastmath=REDUCE)
def attention_heads(query, key, value, mask, scale, head_scale, out, probs):
    # query [b, h, t, d], key/value [b, h, >= s, d] (only the first s rows along axis 2 are read),
    # mask [b, t, s] (True = may attend), head_scale [h] -> out [b, h, t, d],
    # probs [b, h, t, s] (written unless it is empty). All C-contiguous, so that the dot products
    # over d vectorise. One (batch, head) pair per task; each query row runs four passes over
    # the keys, four keys at a time (one load of q and one update of the output row serve four).
    b, h, t, d = query.shape
    s = mask.shape[2]
    write_probs = probs.size > 0       # an argument, not a flag: a constant bool compiles apart
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        scores = np.empty(s, dtype=np.float32)        # scratch per task, reused for every row
        lanes = np.empty(16, dtype=np.float32)
        for ti in range(t):
            q = query[bi, hi, ti]
            row_mask = mask[bi, ti]
            o_row = out[bi, hi, ti]
            # pass 1: scaled scores q.k (a masked key gets -inf, whatever its values), their max
            j = 0
            while j + 4 <= s:
                k0, k1, k2, k3 = key[bi, hi, j], key[bi, hi, j + 1], key[bi, hi, j + 2], key[bi, hi, j + 3]
                dot0 = dot1 = dot2 = dot3 = np.float32(0.0)
                for c in range(d):
                    dot0 += q[c] * k0[c]
                    dot1 += q[c] * k1[c]
                    dot2 += q[c] * k2[c]
                    dot3 += q[c] * k3[c]
                scores[j] = dot0 * scale if row_mask[j] else np.float32(-np.inf)
                scores[j + 1] = dot1 * scale if row_mask[j + 1] else np.float32(-np.inf)
                scores[j + 2] = dot2 * scale if row_mask[j + 2] else np.float32(-np.inf)
                scores[j + 3] = dot3 * scale if row_mask[j + 3] else np.float32(-np.inf)
                j += 4
            for j in range(j, s):
                k = key[bi, hi, j]
                dot = np.float32(0.0)
                for c in range(d):
                    dot += q[c] * k[c]
                scores[j] = dot * scale if row_mask[j] else np.float32(-np.inf)
            maxval = row_max(scores, s, lanes)
            if maxval == -np.inf:                        # nothing to attend to: zeros, not NaN
                o_row[:] = 0.0
                if write_probs:
                    probs[bi, hi, ti, :] = 0.0
                continue
            # passes 2-3: softmax over the visible keys, times the head mask
            _softmax_visible_row(scores, row_mask, maxval, head_scale[hi])
            # pass 4: out = sum over visible keys of prob * value. A masked key is skipped, not
            # multiplied by 0, so a NaN in its value (padding) cannot reach the output.
            o_row[:] = 0.0
            j = 0
            while j + 4 <= s:
                if row_mask[j] and row_mask[j + 1] and row_mask[j + 2] and row_mask[j + 3]:
                    p0, p1, p2, p3 = scores[j], scores[j + 1], scores[j + 2], scores[j + 3]
                    v0, v1, v2, v3 = value[bi, hi, j], value[bi, hi, j + 1], value[bi, hi, j + 2], value[bi, hi, j + 3]
                    for c in range(d):
                        o_row[c] += p0 * v0[c] + p1 * v1[c] + p2 * v2[c] + p3 * v3[c]
                else:
                    for jj in range(j, j + 4):
                        if row_mask[jj]:
                            p = scores[jj]
                            v = value[bi, hi, jj]
                            for c in range(d):
                                o_row[c] += p * v[c]
                j += 4
            for j in range(j, s):
                if row_mask[j]:
                    p = scores[j]
                    v = value[bi, hi, j]
                    for c in range(d):
                        o_row[c] += p * v[c]
            if write_probs:            # element by element: an array assignment would compile
                for j in range(s):     # a shape check whose error message costs 2 s to compile
                    probs[bi, hi, ti, j] = scores[j]


@njit(fastmath=REDUCE, error_model="numpy", cache=True)
def _masked_softmax_block(scores, mask, r0, scale, head_scale, factors):
    # scores [h, rows, n] = q.k of query rows r0 .. r0 + rows against keys 0 .. n (from BLAS),
    # mask [t, s] (True = may attend; only columns < n are read), head_scale [h] ->
    # scores in place: exp(scale * score - row max) on the visible keys, exactly 0 on masked
    # keys; factors [h, rows] = head_scale / (the row's sum), by which the caller multiplies the
    # row's output instead (an output row has d values, a score row n: one pass over the scores
    # fewer). A row with no visible key becomes all zeros with factor 0.
    h, rows, n = scores.shape
    lanes = np.empty(16, dtype=np.float32)              # row_max's scratch, allocated once
    for hi in range(h):
        for r in range(rows):
            x = scores[hi, r]
            row_mask = mask[r0 + r]
            for j in range(n):             # pass 1: scale, -inf on masked keys, then the max
                x[j] = x[j] * scale if row_mask[j] else np.float32(-np.inf)
            maxval = row_max(x, n, lanes)
            if maxval == -np.inf:
                x[:] = 0.0
                factors[hi, r] = 0.0
                continue
            total = np.float32(0.0)
            for j in range(n):             # pass 2: exp (exp(-inf) = 0 on masked keys), sum
                e = exp(x[j] - maxval)
                x[j] = e
                total += e
            factors[hi, r] = head_scale[hi] / total


# Prefill attention with at least this many query rows uses BLAS for q.k and probs.v, in blocks
# of ATTENTION_BLOCK_ROWS query rows; each block stops at the last key any of its rows can see,
# so a causal prefill skips most of the masked upper triangle while the rest runs at BLAS speed.
ATTENTION_BLAS_MIN_ROWS = 32
ATTENTION_BLOCK_ROWS = 128


def _zero_nonfinite_hidden_keys(key, value, mask):
    """key, value [b, h, s, d] with zeros in the rows no query may see, if those hold NaN or inf.

    probs @ value multiplies a masked key's value by an exact 0, and 0 * NaN is NaN: a NaN in a
    padding position would reach every row of the block (PITFALLS 3). The looped kernel skips
    masked keys instead; here the few affected rows are zeroed in a copy. Checked only when a
    batch row has keys that no query sees (padding), so a plain causal prefill costs nothing.
    """
    hidden = ~mask.any(axis=1)                                      # [b, s]: padding keys
    if not hidden.any():
        return key, value
    hidden_rows = np.broadcast_to(hidden[:, None, :], key.shape[:3])  # [b, h, s]
    if np.isfinite(key[hidden_rows]).all() and np.isfinite(value[hidden_rows]).all():
        return key, value
    key, value = key.copy(), value.copy()
    key[hidden_rows] = 0.0
    value[hidden_rows] = 0.0
    return key, value


def _attention_blas(query, key, value, mask, scale, head_scale, out, probs):
    """Prefill attention by BLAS, one batch row and block of query rows (all heads) at a time.

    query [b, h, t, d], key/value [b, h, s, d] (any strides BLAS accepts), mask [b, t, s]
    C-contiguous -> out [b, h, t, d]; probs [b, h, t, s] zeros (filled) or None.
    """
    b, h, t, d = query.shape
    key, value = _zero_nonfinite_hidden_keys(key, value, mask)
    extent = visible_extent(mask)                                  # [b, t]
    factors = np.empty((h, ATTENTION_BLOCK_ROWS), dtype=np.float32)  # head_scale / row sums
    for bi in range(b):
        for r0 in range(0, t, ATTENTION_BLOCK_ROWS):
            r1 = min(t, r0 + ATTENTION_BLOCK_ROWS)
            n = int(extent[bi, r0:r1].max())                        # keys this block can see
            if n == 0:
                out[bi, :, r0:r1] = 0.0
                continue
            # scores = q @ k.T   [h, rows, d] @ [h, d, n] -> [h, rows, n]
            scores = np.matmul(query[bi, :, r0:r1], key[bi, :, :n].swapaxes(-1, -2))
            # unnormalised masked softmax in place (masked keys -> 0), factors [h, rows]
            _masked_softmax_block(scores, mask[bi], r0, np.float32(scale), head_scale, factors)
            # out = (exp @ v) * factor   [h, rows, n] @ [h, n, d] -> [h, rows, d]
            block_out = out[bi, :, r0:r1]
            np.matmul(scores, value[bi, :, :n], out=block_out)
            block_out *= factors[:, :r1 - r0, None]
            if probs is not None:
                probs[bi, :, r0:r1, :n] = scores * factors[:, :r1 - r0, None]


def _check_attention_args(query, key, value, mask, head_mask):
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ValueError(f"query, key and value must be [batch, n_head, seq, head_dim], got shapes "
                         f"{query.shape}, {key.shape}, {value.shape}")
    b, h, t, d = query.shape
    s = key.shape[2]
    if key.shape != (b, h, s, d) or value.shape != (b, h, s, d):
        raise ValueError(f"key and value must have shape {(b, h, s, d)} to match query {query.shape}, "
                         f"got {key.shape} and {value.shape}")
    if mask.shape != (b, t, s):
        raise ValueError(f"mask must have shape {(b, t, s)} (batch, query, key), got {mask.shape}")
    if head_mask is not None and np.shape(head_mask) != (h,):
        raise ValueError(f"head_mask must have shape ({h},), got {np.shape(head_mask)}")


def _rows_buffer(a):
    """a [b, h, s, d] as a C-contiguous array whose first s rows along axis 2 are a.

    The KV cache hands out `buffer[:, :, :s]` of its preallocated C-contiguous buffer: the
    buffer itself is returned (no copy; the kernel reads only s rows). Any other strided view
    (a head split of the qkv projection) is copied, which is cheap next to the attention.
    """
    if a.flags.c_contiguous:
        return a
    base = a.base
    if (isinstance(base, np.ndarray) and base.ndim == 4 and base.flags.c_contiguous
            and base.dtype == a.dtype and base.shape[:2] == a.shape[:2] and base.shape[3] == a.shape[3]
            and a.strides == base.strides and _address(a) == _address(base)):
        return base
    return np.ascontiguousarray(a)


@njit(cache=True)
def _address(a):
    # the address of a's first element (a.ctypes.data builds a ctypes object on every call)
    return a.ctypes.data


_NO_PROBS = np.empty((0, 0, 0, 0), dtype=np.float32)     # the kernel's probs when none are asked for


def attention(query, key, value, mask, scale, head_mask=None, output_attentions=False):
    """Masked scaled dot-product attention; masked keys are skipped, not filled.

    query [b, h, t, d], key/value [b, h, s, d], mask [b, t, s] bool (True = may attend),
    scale float, head_mask [h] or None -> (out [b, h, t, d], probs [b, h, t, s] or None).
    probs = softmax over the visible keys (0 elsewhere) times head_mask[h]; a query row with no
    visible key gets all-zero probs and a zero output.
    """
    query = np.asarray(query, dtype=np.float32)
    key = np.asarray(key, dtype=np.float32)
    value = np.asarray(value, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.bool_)
    if not mask.flags.writeable:        # (a broadcast view) Numba compiles read-only arrays apart
        mask = mask.copy()
    _check_attention_args(query, key, value, mask, head_mask)
    b, h, t, d = query.shape
    s = key.shape[2]
    head_scale = as_vector(head_mask, h, "head_mask") if head_mask is not None else ones(h)
    out = np.empty((b, h, t, d), dtype=np.float32)
    if not output_attentions and d % 32 == 0 and policy.bfloat16_tiles_allowed(t):
        key, value = _zero_nonfinite_hidden_keys(key, value, mask)
        return amx.attention(query, key, value, mask, scale, head_scale), None
    if t >= ATTENTION_BLAS_MIN_ROWS:
        probs = np.zeros((b, h, t, s), dtype=np.float32) if output_attentions else None
        _attention_blas(query, key, value, mask, scale, head_scale, out, probs)
        policy.note_blas_call()
        return out, probs
    # probs is only allocated when asked for; the kernel still needs an array of the right rank
    probs = np.empty((b, h, t, s), dtype=np.float32) if output_attentions else _NO_PROBS
    query, key, value = _rows_buffer(query), _rows_buffer(key), _rows_buffer(value)
    # the work grows with b * h * t * s * d; a quarter of it counts as one element
    serial = policy.run_serial(b * h * t * s * d // 4, beside_blas=policy.blas_ran_recently())
    kernel = attention_heads[serial]
    kernel(query, key, value, mask, np.float32(scale), head_scale, out, probs)
    return out, (probs if output_attentions else None)
