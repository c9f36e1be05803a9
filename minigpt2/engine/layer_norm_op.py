"""layer_norm as a Numba kernel: the same function as ``ops.layer_norm``.

Paths:
* one pass per row (mean, centred variance, then normalise), statistics in float64;
* serial build when the input is small or the pass runs between BLAS calls (every layer norm of
  a prefill does: ``policy.run_serial(..., beside_blas=True)``), threaded otherwise.
"""

import math

import numpy as np
from numba import njit, prange

from minigpt2.engine import policy
from minigpt2.engine.jit import REDUCE, as_rows, as_vector, threaded_and_serial


@njit(inline="always")
def layer_norm_row(row, weight, bias, eps, out_row):
    # row [C] -> out_row [C]; statistics in float64, two passes (mean, then centred variance).
    # Inlined into its callers (layer_norm_rows, decode_step.decode_body), so they compute alike.
    C = row.shape[0]
    total = 0.0
    for c in range(C):
        total += row[c]
    mean = total / C
    sq = 0.0
    for c in range(C):
        dev = row[c] - mean
        sq += dev * dev
    rstd = 1.0 / math.sqrt(sq / C + eps)      # biased variance, eps inside the sqrt
    mean32 = np.float32(mean)
    rstd32 = np.float32(rstd)
    for c in range(C):
        out_row[c] = (row[c] - mean32) * rstd32 * weight[c] + bias[c]


@threaded_and_serial(fastmath=REDUCE)
def layer_norm_rows(x, weight, bias, eps, out):
    # x [n, C] -> out [n, C], one row per task
    for r in prange(x.shape[0]):
        layer_norm_row(x[r], weight, bias, eps, out[r])


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis: x [..., C], weight [C], bias [C] -> [..., C] float32."""
    x2, lead = as_rows(x, "x")
    C = x2.shape[1]
    out = np.empty_like(x2)
    kernel = layer_norm_rows[policy.run_serial(x2.size, beside_blas=True)]
    kernel(x2, as_vector(weight, C, "weight"), as_vector(bias, C, "bias"), float(eps), out)
    return out.reshape(*lead, C)
