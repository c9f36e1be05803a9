"""The Numba backend: the forward-pass ops of ``minigpt2.ops``, made fast.

This package provides every op named in ``ops.BACKEND_OPS`` with the same signature as in
``ops.py`` (``backend="numba"`` in the model, the default), plus the engine's settings:

    layer_norm, linear, linear_gelu, gelu_new, attention       the backend contract
    set_num_threads                                              Numba's and BLAS's threads
    set_float32_matmul_precision, get_float32_matmul_precision  bfloat16 products on AMX tiles
    set_int8_compute, get_int8_compute                          int8 activations for int8 weights (opt-in)
    DecodeStep                                                   a batch-1 decode step's blocks in one call

Read ``ops.py`` first: it says *what* is computed. Each file here says how, fast, and opens with
the list of its paths and when each is taken:

    jit.py         building blocks: threaded + serial builds, intrinsics, vectorisable exp / GELU
    cpu.py         what this CPU offers (LLVM's view of its features)
    policy.py      which path a call takes: thread counts, BLAS coordination, precision
    matvec.py      decode's matrix-vector products (weights streamed once per token)
    decode_step.py a batch-1 decode step through every block as one compiled call
    int8_dot.py    integer dot products for int8 weights: VNNI, AVX2 or emulated (opt-in)
    amx.py         prefill matmuls and attention on Intel AMX tiles
    amx_emulation.py  the AMX tile instructions in plain Numba (MINIGPT2_AMX=emulate: tests on any CPU)
    layer_norm_op.py  gelu_op.py  linear_op.py  attention_op.py    the ops, one per file

Numerics: float32 storage and arithmetic; layer norm statistics accumulate in float64. Only
reduction kernels get ``fastmath={"reassoc", "contract"}`` (needed to vectorise a float sum; it
reorders additions as BLAS does); the blanket ``fastmath=True`` is never used, since it also
assumes no NaN or inf, which would break the masked-row handling.
"""

from minigpt2.engine.attention_op import attention
from minigpt2.engine.decode_step import DecodeStep
from minigpt2.engine.gelu_op import gelu_new
from minigpt2.engine.layer_norm_op import layer_norm
from minigpt2.engine.linear_op import linear, linear_gelu
from minigpt2.engine.policy import (get_float32_matmul_precision, get_int8_compute, set_float32_matmul_precision,
                                    set_int8_compute, set_num_threads)

__all__ = ["DecodeStep", "attention", "gelu_new", "get_float32_matmul_precision", "get_int8_compute", "layer_norm",
           "linear", "linear_gelu", "set_float32_matmul_precision", "set_int8_compute", "set_num_threads"]
