"""gelu_new as a Numba kernel: the same function as ``ops.gelu_new``.

Paths:
* one elementwise pass of ``jit.gelu_scalar`` (the tanh form written with exp, which vectorises),
  serial for small inputs, threaded otherwise. The MLP's GELU is usually fused into the bias
  pass of its matmul instead (``linear_op.linear_gelu``); this op is the stand-alone one.
"""

import numpy as np

from minigpt2.engine import policy
from minigpt2.engine.jit import gelu_inplace


def gelu_new(x):
    """GELU, tanh approximation (OpenAI GPT-2 / HF "gelu_new"): any shape -> same shape float32."""
    x = np.asarray(x)
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    gelu_inplace[policy.run_serial(out.size)](out.reshape(-1))
    return out
