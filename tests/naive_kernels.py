"""The naive twins of the engine's kernels: plain loops, no threads, no fast-math, float64 sums.

Written to be obviously right, they are what tests/test_ops_vs_kernels.py holds the fast kernels
(minigpt2.engine) to, beside the NumPy ops (minigpt2.ops). Each is named after the op it checks.
"""

import math

import numpy as np
from numba import njit

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@njit(cache=True)
def layer_norm_naive(x, weight, bias, eps):
    """Twin of layer_norm for tests: x [n, C] float32 -> [n, C], textbook loops."""
    n, C = x.shape
    out = np.empty((n, C), dtype=np.float32)
    for r in range(n):
        mean = 0.0
        for c in range(C):
            mean += x[r, c]
        mean /= C
        var = 0.0
        for c in range(C):
            var += (x[r, c] - mean) ** 2
        var /= C
        for c in range(C):
            out[r, c] = (x[r, c] - mean) / math.sqrt(var + eps) * weight[c] + bias[c]
    return out



@njit(cache=True)
def gelu_new_naive(x):
    """Twin of gelu_new for tests: x [n] float32 -> [n], the textbook tanh formula in float64."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        out[i] = 0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v ** 3)))
    return out



@njit(cache=True)
def linear_naive(x, weight, bias):
    """Twin of linear for tests: x [m, n_in] @ weight [n_in, n_out] + bias -> [m, n_out], float64 sums."""
    m, n_in = x.shape
    n_out = weight.shape[1]
    out = np.empty((m, n_out), dtype=np.float32)
    for r in range(m):
        for o in range(n_out):
            total = np.float64(bias[o])
            for i in range(n_in):
                total += np.float64(x[r, i]) * np.float64(weight[i, o])
            out[r, o] = total
    return out



@njit(cache=True)
def attention_naive(query, key, value, mask, scale, head_scale):
    """Twin of attention for tests (no skipping: masked scores filled, then zeroed).

    Same shapes as attention; head_scale [h] (ones for no head mask); returns (out, probs).
    """
    b, h, t, d = query.shape
    s = key.shape[2]
    out = np.zeros((b, h, t, d), dtype=np.float32)
    probs = np.zeros((b, h, t, s), dtype=np.float32)
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                scores = np.full(s, -np.inf)
                for j in range(s):
                    if mask[bi, ti, j]:
                        dot = 0.0
                        for c in range(d):
                            dot += np.float64(query[bi, hi, ti, c]) * key[bi, hi, j, c]
                        scores[j] = dot * scale
                maxval = scores.max()
                if maxval == -np.inf:
                    continue
                weights = np.exp(scores - maxval)
                weights = weights / weights.sum() * head_scale[hi]
                for j in range(s):
                    probs[bi, hi, ti, j] = weights[j]
                    for c in range(d):
                        out[bi, hi, ti, c] += weights[j] * value[bi, hi, j, c]
    return out, probs
