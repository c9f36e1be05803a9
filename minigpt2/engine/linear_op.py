"""linear and linear_gelu as Numba kernels: the same functions as ``ops.linear`` (and its
composition with ``ops.gelu_new``), x @ weight + bias in HF's Conv1D layout (weight [n_in, n_out]).

Paths, in the order they are tried (``policy.py`` holds every threshold):
* AMX tiles (``amx.linear``): matmul precision "medium" on a CPU with AMX, and a prefill (or a
  batch of 16+ rows over a bfloat16 weight used as stored); bfloat16 products, float32 sums.
* packed weights (``weights.packed.PackedWeight``): up to PACKED_MATVEC_MAX_ROWS rows, the decode
  kernels read the packed bytes (``matvec.matvec_out_in_one_row`` for one row,
  ``matvec.matvec_out_in`` for more); more rows widen the matrix to float32 once and call BLAS.
  One row over int8 weights with ``policy.set_int8_compute("int8")``: the activations rounded to
  int8 as well, integer dot products (``int8_dot.py``).
* float32, 2..MATVEC_MAX_ROWS rows (batched decode): ``matvec.matvec_in_out`` for the
  checkpoint's [n_in, n_out] layout, ``matvec.matvec_out_in`` for a transposed [n_out, n_in]
  array such as the tied LM head ``wte.T``.
* float32 otherwise (one row: sgemv; a prefill: sgemm): BLAS, then one Numba pass adds the bias
  (and GELU) in place. The matmul runs outside Numba, which has no BLAS without SciPy.
"""

import numba
import numpy as np
from numba import prange

from minigpt2.engine import amx, int8_dot, policy
from minigpt2.engine.jit import as_rows, as_vector, gelu_scalar, ones, threaded_and_serial
from minigpt2.engine.matvec import matvec_in_out, matvec_out_in, matvec_out_in_one_row, stored_rows, widen_rows
from minigpt2.weights.packed import PackedWeight


@threaded_and_serial()
def bias_act_inplace(out, bias, apply_gelu):
    # out [m, n_out] += bias [n_out], then optionally GELU, in one pass
    m, n_out = out.shape
    for r in prange(m):
        row = out[r]
        if apply_gelu:
            for o in range(n_out):
                row[o] = gelu_scalar(row[o] + bias[o])
        else:
            for o in range(n_out):
                row[o] += bias[o]


def _linear_packed(x2, weight, bias, apply_gelu, out):
    """linear() for a PackedWeight: the packed kernel for decode, widen + BLAS for prefill."""
    m = x2.shape[0]
    data = stored_rows(weight)
    scale = weight.scale if weight.scale is not None else ones(data.shape[0])
    if m == 1 and weight.rows_are_outputs and integer_dot_applies(data):
        x_q, x_scales = np.empty(data.shape[1], dtype=np.int8), np.empty(data.shape[1] // int8_dot.BLOCK, np.float32)
        int8_dot.quantize_blocks(x2[0], x_q, x_scales)
        int8_dot.matvec_int8_blocks(x_q, x_scales, data, scale, bias, apply_gelu, policy.one_row_prefetch_rows(data),
                                    out[0])
    elif m == 1 and weight.rows_are_outputs:
        matvec_out_in_one_row(x2[0], data, scale, bias, apply_gelu, policy.one_row_prefetch_rows(data), out[0])
    elif m <= policy.PACKED_MATVEC_MAX_ROWS and weight.rows_are_outputs:
        matvec_out_in[policy.run_serial(data.size)](x2, data, scale, bias, apply_gelu, out)
    else:
        # a float32 copy of the stored rows in one Numba pass (NumPy's float16 astype is much
        # slower), then BLAS on it in the logical layout
        rows = np.empty(data.shape, dtype=np.float32)
        widen_rows(data, scale, rows)
        policy.blas_matmul(x2, rows.T if weight.rows_are_outputs else rows, out)
        bias_act_inplace[policy.run_serial(out.size, beside_blas=True)](out, bias, apply_gelu)
    return out


def integer_dot_applies(data):
    """Whether a one-row product over these stored rows takes int8_dot's integer kernel."""
    return policy.get_int8_compute() == "int8" and int8_dot.applies(data.shape[1], data)


def _linear_float32(x2, weight, bias, apply_gelu, out):
    """linear() for a float32 weight: matrix-vector kernels for a few rows, BLAS otherwise."""
    m = x2.shape[0]
    if m <= policy.MATVEC_MAX_ROWS and (m > 1 or policy.FLOAT32_MATVEC == "numba"):
        serial = policy.run_serial(weight.size)
        n_chunks = 1 if serial else numba.get_num_threads()
        if weight.flags.c_contiguous:
            matvec_in_out[serial](x2, weight, bias, apply_gelu, n_chunks, out)
        elif weight.T.flags.c_contiguous:          # an [n_out, n_in] array seen transposed
            matvec_out_in[serial](x2, weight.T, ones(out.shape[1]), bias, apply_gelu, out)
        else:
            matvec_in_out[serial](x2, np.ascontiguousarray(weight), bias, apply_gelu, n_chunks, out)
    else:
        policy.blas_matmul(x2, weight, out)        # BLAS sgemm / sgemv, either layout
        bias_act_inplace[policy.run_serial(out.size, beside_blas=True)](out, bias, apply_gelu)
    return out


def _linear(x, weight, bias, apply_gelu):
    # x [..., n_in] -> [..., n_out]: check once, then take one of the paths in the module docstring
    x2, lead = as_rows(x, "x")
    packed = isinstance(weight, PackedWeight)
    if not packed and (type(weight) is not np.ndarray or weight.dtype != np.float32):
        weight = np.asarray(weight, dtype=np.float32)
    shape = weight.shape
    if len(shape) != 2 or shape[0] != x2.shape[1]:
        raise ValueError(f"weight must have shape ({x2.shape[1]}, n_out) for x of shape "
                         f"{tuple(lead) + (x2.shape[1],)}, got {shape}")
    n_out = shape[1]
    bias = as_vector(bias, n_out, "bias")
    out = np.empty((x2.shape[0], n_out), dtype=np.float32)
    if policy.bfloat16_tiles_allowed(x2.shape[0], weight):
        weight_rows, scale = amx.bfloat16_weight_rows(weight)
        amx.linear(x2, weight_rows, scale, bias, apply_gelu, out)
    elif packed:
        _linear_packed(x2, weight, bias, apply_gelu, out)
    else:
        _linear_float32(x2, weight, bias, apply_gelu, out)
    return out.reshape(*lead, n_out)


def linear(x, weight, bias):
    """x [..., n_in] @ weight [n_in, n_out] + bias [n_out] -> [..., n_out] float32.

    `bias` may be None (the tied LM head). `weight` may be C-contiguous (the checkpoint's
    [n_in, n_out]), the transpose of a C-contiguous [n_out, n_in] array (such as `wte.T`), or a
    PackedWeight; all are streamed without a copy.
    """
    return _linear(x, weight, bias, False)


def linear_gelu(x, weight, bias):
    """gelu_new(linear(x, weight, bias)) with the GELU fused into the bias pass (the MLP's c_fc)."""
    return _linear(x, weight, bias, True)
