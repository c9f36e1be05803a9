"""Integer dot products for int8 weights (opt-in): activations rounded to int8 in blocks of 32.

The default int8 path widens each weight to float32 and multiplies it by the float32 activation.
This one, as llama.cpp's q8_0, rounds the activations too: per block of 32 inputs,
s_b = max|x| / 127 and q = rint(x * 127 / max|x|), so that x ~ q * s_b. A weight row's dot
product is then

    row scale * sum over blocks b of  s_b * (q . w over the block, in int32: exact)

and the integer sums run on the CPU's integer dot-product instructions, chosen once per process
(cpu.int8_dot_path):

* "vnni": AVX512-VNNI with AVX512-VL: VPDPBUSD multiplies 32 unsigned by 32 signed bytes and adds
  each group of four products into one of 8 int32 lanes: one instruction per block;
* "avx2": VPMADDUBSW (products added in pairs, into int16) then VPMADDWD by ones (pairs of those,
  into int32): the same 8 lanes in two instructions;
* "emulate": those lanes computed in plain Numba (MINIGPT2_INT8_DOT=emulate), so that the tests
  run this kernel on any CPU.

Both instructions take one unsigned operand, so the activations' signs move to the weights first
(VPSIGNB: |q| times w * sign(q) are the same products). |q| <= 127 and |w| <= 127 (quantize.py's
range) keep VPMADDUBSW's int16 pairs below saturation (2 * 127 * 127 = 32258): every path gives
the same int32 lanes, then the same float32 arithmetic lane by lane (a fused multiply-add per
block, the 8 lanes summed in order), so all three give the same bits.

Used for batch-1 decode steps (one row of x) when `policy.set_int8_compute("int8")` asks for it;
prefill and batched decode keep float32 activations.
"""

import llvmlite.ir
import numba
import numpy as np
from numba import njit, prange
from numba.core import cgutils
from numba.extending import intrinsic, overload

from minigpt2.engine import cpu
from minigpt2.engine.jit import prefetch_row
from minigpt2.engine.matvec import finish_output, row_addresses

BLOCK = 32            # inputs per activation scale: one 256-bit vector of int8
LANES = 8             # int32 lanes of a block's integer sums
PATH = cpu.int8_dot_path()


@njit(cache=True, error_model="numpy")
def quantize_blocks(x, q, scales):
    # x [n] float32, n a multiple of BLOCK -> q [n] int8, scales [n / BLOCK] float32
    for b in range(x.shape[0] // BLOCK):
        start = b * BLOCK
        largest = np.float32(0.0)
        for i in range(start, start + BLOCK):
            largest = max(largest, abs(x[i]))
        scales[b] = largest / np.float32(127.0)
        inverse = np.float32(127.0) / largest if largest > 0 else np.float32(0.0)
        for i in range(start, start + BLOCK):
            q[i] = np.int8(np.rint(x[i] * inverse))


# ---- the native block loop, in LLVM IR --------------------------------------------------------

def _emit_block_dot(builder, x_q_address, x_scales_address, row_address, n_blocks):
    """LLVM IR for one row's  sum over blocks of s_b * (x_q . w)  with PATH's instructions: the
    8 float32 lanes accumulated with one fused multiply-add per block, then summed in lane order."""
    ir = llvmlite.ir
    int8, int16, int32, int64, float32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
    bytes_vector, lanes_vector = ir.VectorType(int8, BLOCK), ir.VectorType(int32, LANES)
    floats = ir.VectorType(float32, LANES)
    module = builder.module

    def function(name, result, arguments):
        return cgutils.get_or_insert_function(module, ir.FunctionType(result, arguments), name)

    psign = function("llvm.x86.avx2.psign.b", bytes_vector, [bytes_vector, bytes_vector])
    fma = function(f"llvm.fma.v{LANES}f32", floats, [floats] * 3)
    start = builder.block
    loop = builder.append_basic_block("block_dot.loop")
    done = builder.append_basic_block("block_dot.done")
    zero = ir.Constant(floats, [0.0] * LANES)
    builder.cbranch(builder.icmp_signed(">", n_blocks, ir.Constant(int64, 0)), loop, done)
    builder.position_at_end(loop)                                # for b in range(n_blocks):
    b = builder.phi(int64)
    running = builder.phi(floats)
    offset = builder.mul(b, ir.Constant(int64, BLOCK))
    x_bytes = builder.load(builder.inttoptr(builder.add(x_q_address, offset), bytes_vector.as_pointer()), align=1)
    w_bytes = builder.load(builder.inttoptr(builder.add(row_address, offset), bytes_vector.as_pointer()), align=1)
    unsigned = builder.call(psign, [x_bytes, x_bytes])          # |q|
    signed = builder.call(psign, [w_bytes, x_bytes])            # w * sign(q)
    if PATH == "vnni":
        vpdpbusd = function("llvm.x86.avx512.vpdpbusd.256", lanes_vector, [lanes_vector] * 3)
        lanes = builder.call(vpdpbusd, [ir.Constant(lanes_vector, [0] * LANES),
                                        builder.bitcast(unsigned, lanes_vector), builder.bitcast(signed, lanes_vector)])
    else:
        pairs_vector = ir.VectorType(int16, 2 * LANES)
        pmaddubsw = function("llvm.x86.avx2.pmadd.ub.sw", pairs_vector, [bytes_vector, bytes_vector])
        pmaddwd = function("llvm.x86.avx2.pmadd.wd", lanes_vector, [pairs_vector, pairs_vector])
        pairs = builder.call(pmaddubsw, [unsigned, signed])
        lanes = builder.call(pmaddwd, [pairs, ir.Constant(pairs_vector, [1] * 2 * LANES)])
    scale = builder.load(builder.inttoptr(builder.add(x_scales_address, builder.mul(b, ir.Constant(int64, 4))),
                                          float32.as_pointer()))
    scales = builder.shuffle_vector(builder.insert_element(ir.Constant(floats, ir.Undefined), scale, ir.Constant(int32, 0)),
                                    ir.Constant(floats, ir.Undefined), ir.Constant(lanes_vector, [0] * LANES))
    updated = builder.call(fma, [builder.sitofp(lanes, floats), scales, running])
    b_next = builder.add(b, ir.Constant(int64, 1))
    b.add_incoming(ir.Constant(int64, 0), start)
    b.add_incoming(b_next, loop)
    running.add_incoming(zero, start)
    running.add_incoming(updated, loop)
    builder.cbranch(builder.icmp_signed("<", b_next, n_blocks), loop, done)
    builder.position_at_end(done)
    final = builder.phi(floats)
    final.add_incoming(zero, start)
    final.add_incoming(updated, loop)
    total = builder.extract_element(final, ir.Constant(int32, 0))
    for lane in range(1, LANES):                                 # in lane order, as the emulation
        total = builder.fadd(total, builder.extract_element(final, ir.Constant(int32, lane)))
    return total


@intrinsic
def _row_dot_native(typingctx, x_q, x_scales, data, row):
    """data[row] . x in blocks (module docstring), on this CPU's instructions."""
    def codegen(context, builder, signature, args):
        x_q_value, x_scales_value, data_value, row_value = args
        int64 = llvmlite.ir.IntType(64)
        zero = llvmlite.ir.Constant(int64, 0)
        n_in = builder.extract_value(context.make_array(signature.args[2])(context, builder, data_value).shape, 1)
        n_blocks = builder.sdiv(n_in, llvmlite.ir.Constant(int64, BLOCK))
        (x_q_address,) = row_addresses(context, builder, signature.args[0], x_q_value, zero, 1)
        (x_scales_address,) = row_addresses(context, builder, signature.args[1], x_scales_value, zero, 1)
        (row_address,) = row_addresses(context, builder, signature.args[2], data_value, row_value, 1)
        return _emit_block_dot(builder, x_q_address, x_scales_address, row_address, n_blocks)
    return numba.types.float32(x_q, x_scales, data, numba.types.intp), codegen


# ---- the emulation: the instructions' arithmetic in plain Numba --------------------------------

@intrinsic
def _fused_multiply_add(typingctx, a, b, c):
    """a * b + c for float32, rounded once (llvm.fma.f32: what the native loop does per lane)."""
    def codegen(context, builder, signature, args):
        float32 = llvmlite.ir.FloatType()
        fma = cgutils.get_or_insert_function(builder.module, llvmlite.ir.FunctionType(float32, [float32] * 3),
                                             "llvm.fma.f32")
        return builder.call(fma, list(args))
    return numba.types.float32(numba.types.float32, numba.types.float32, numba.types.float32), codegen


@njit(inline="always")
def _sign_of(value, by):
    # VPSIGNB on one byte: value, -value (int8 wrap-around) or 0 as `by` is > 0, < 0 or 0
    if by > 0:
        return np.int32(value)
    if by < 0:
        return np.int32(np.int8(-np.int32(value)))
    return np.int32(0)


@njit(inline="always")
def _row_dot_emulated(x_q, x_scales, data, row):
    # lane k of block b = sum over j < 4 of |q[4k + j]| * (w * sign(q))[4k + j], as VPDPBUSD (and
    # VPMADDUBSW + VPMADDWD, which cannot saturate here) compute it; then the native float steps
    running = np.zeros(LANES, dtype=np.float32)
    w = data[row]
    for b in range(data.shape[1] // BLOCK):
        for lane in range(LANES):
            total = np.int32(0)
            for j in range(4):
                i = b * BLOCK + 4 * lane + j
                total += _sign_of(x_q[i], x_q[i]) * _sign_of(w[i], x_q[i])
            running[lane] = _fused_multiply_add(np.float32(total), x_scales[b], running[lane])
    result = running[0]
    for lane in range(1, LANES):
        result += running[lane]
    return result


def row_dot(x_q, x_scales, data, row):
    """sum over blocks b of x_scales[b] * (x_q . data[row]) over the block, as a float32."""
    raise NotImplementedError("row_dot is only callable from Numba-compiled code")


@overload(row_dot, inline="always")
def _row_dot_by_path(x_q, x_scales, data, row):
    if PATH == "emulate":
        return lambda x_q, x_scales, data, row: _row_dot_emulated(x_q, x_scales, data, row)
    return lambda x_q, x_scales, data, row: _row_dot_native(x_q, x_scales, data, row)


@njit(parallel=True, error_model="numpy", cache=True)
def matvec_int8_blocks(x_q, x_scales, data, scale, bias, apply_gelu, prefetch_ahead, out):
    # x [n_in] as x_q [n_in] int8 and x_scales [n_in / BLOCK] @ (data [n_out, n_in] int8 * scale
    # [n_out]).T + bias -> out [n_out]; one output row per task, as matvec_out_in_one_row.
    # x_q, x_scales and data must be C-contiguous (the native loop reads them by address).
    for o in prange(data.shape[0]):
        if prefetch_ahead > 0:
            prefetch_row(data, o + prefetch_ahead)
        out[o] = finish_output(row_dot(x_q, x_scales, data, o), scale[o], bias[o], apply_gelu)


def applies(x_width, data):
    """Whether matvec_int8_blocks can run a [n_out, x_width] int8 matrix: whole blocks of inputs."""
    return data.dtype == np.int8 and x_width % BLOCK == 0 and data.flags.c_contiguous
