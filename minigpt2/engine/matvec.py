"""Decode's matrix-vector products: every weight streamed once per token, at memory speed.

A decode step multiplies a few rows of activations (one per sequence) by every weight matrix,
so it is bound by how fast the weights stream from memory, not by arithmetic. Two kernels, one
per weight layout (linear_op.py picks one; BENCHMARKS.md has the measurements):

* `matvec_in_out`: float32 weights in the checkpoint's [n_in, n_out] layout, 2-8 rows
  (batched decode; one row goes to BLAS sgemv). Each thread streams a contiguous band of weight
  rows and keeps partial sums for every output.
* `matvec_out_in`: weights stored one output per row, [n_out, n_in]: packed bfloat16 / float16
  / int8 (weights/packed.py), widened to float32 in registers so that memory traffic shrinks to 2 or 1
  bytes per weight while the sums stay float32, and the float32 tied LM head wte. Dot products
  over weight rows in a 4 x 4 register tile (2-32 rows of x), with the rows ahead prefetched.
* `matvec_out_in_one_row`: the same layout for one row of x (batch-1 decode): one weight row at
  a time, so each thread reads one sequential stream, which the CPU's own prefetcher follows.
"""

import llvmlite.ir
import numba
import numpy as np
from numba import njit, prange
from numba.core import cgutils
from numba.extending import intrinsic, overload

from minigpt2.engine import cpu
from minigpt2.engine.jit import (REDUCE, bits_to_float32, gelu_scalar, prefetch_distance, prefetch_row,
                                 threaded_and_serial)


@threaded_and_serial()
def matvec_in_out(x, weight, bias, apply_gelu, n_chunks, out):
    # x [m, n_in] @ weight [n_in, n_out] + bias -> out [m, n_out], for small m (decode).
    # The weights are read once, in memory order: chunk k of the threads streams the contiguous
    # rows [i0, i1) of `weight` and accumulates x[:, i] * weight[i, :] into its own partial sums
    # (m * n_out floats, L1/L2 resident). The inner loop is an axpy, which vectorises without
    # reassociation. The partials are then summed in chunk order (deterministic).
    # n_chunks = the number of threads (numba.get_num_threads() inside a kernel stops caching).
    m, n_in = x.shape
    n_out = weight.shape[1]
    n_chunks = max(1, min(n_chunks, n_in))
    rows_per_chunk = (n_in + n_chunks - 1) // n_chunks
    partial = np.zeros((n_chunks, m, n_out), dtype=np.float32)
    for k in prange(n_chunks):
        i0 = k * rows_per_chunk
        i1 = min(n_in, i0 + rows_per_chunk)
        acc = partial[k]
        for i in range(i0, i1):
            w_row = weight[i]
            for r in range(m):
                xi = x[r, i]
                acc_row = acc[r]
                for o in range(n_out):
                    acc_row[o] += xi * w_row[o]
    for r in range(m):
        for o in range(n_out):
            total = bias[o]
            for k in range(n_chunks):
                total += partial[k, r, o]
            out[r, o] = gelu_scalar(total) if apply_gelu else total


# ---- weights stored [n_out, n_in]: packed (bfloat16 / float16 / int8, see weights/packed.py) or
# float32 (the tied LM head, wte.T). The decode kernel reads the stored values and widens each
# to float32 in registers, so for packed weights memory traffic shrinks to 2 or 1 bytes per
# weight while the sums stay float32.


@njit(inline="always")
def _bfloat16_to_float32(raw):
    # raw: uint16 bits; bfloat16 is the upper half of a float32
    return bits_to_float32(np.uint32(raw) << np.uint32(16))


@intrinsic
def _half_bits_to_float32(typingctx, bits):
    """float16 bits (int16) -> float32 through LLVM's half type: one vcvtph2ps on x86 with F16C."""
    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], llvmlite.ir.HalfType())
        return builder.fpext(half, llvmlite.ir.FloatType())
    return numba.types.float32(numba.types.int16), codegen


# Where the CPU widens float16 in one instruction (F16C), the decode kernel uses it; the
# arithmetic conversion below is the fallback.
HARDWARE_HALF = cpu.has_hardware_half()


@njit(inline="always")
def _float16_to_float32(raw):
    # raw: uint16 IEEE half bits. Branch-free (selects), so the loop still vectorises.
    magnitude = np.uint32(raw) & np.uint32(0x7FFF)
    normal = bits_to_float32((magnitude << np.uint32(13)) + np.uint32(0x38000000))     # exp + 112
    special = bits_to_float32((magnitude << np.uint32(13)) | np.uint32(0x7F800000))    # inf, nan
    tiny = np.float32(magnitude) * np.float32(5.9604644775390625e-08)                   # 2**-24
    value = special if magnitude >= 0x7C00 else (normal if magnitude >= 0x0400 else tiny)
    return -value if (np.uint32(raw) & np.uint32(0x8000)) else value


def widen(raw):
    """One stored weight (packed or float32) -> float32; chosen at compile time by its type."""
    raise NotImplementedError("widen is only callable from Numba-compiled code")


@overload(widen)
def widen_by_type(raw):
    # The packed arrays reach the kernel as uint16 (bfloat16 bits), int16 (float16 bits, a view)
    # or int8, so the element type alone selects the conversion, when the kernel is compiled:
    # no branch per value, and no function argument (which costs Numba a type lookup on every
    # call, dozens of calls per decoded token).
    if raw == numba.types.uint16:
        return lambda raw: _bfloat16_to_float32(raw)
    if raw == numba.types.int16 and HARDWARE_HALF:
        return lambda raw: _half_bits_to_float32(raw)
    if raw == numba.types.int16:
        return lambda raw: _float16_to_float32(np.uint16(raw))
    if raw == numba.types.int8:
        return lambda raw: np.float32(raw)            # int8: the per-row scale is applied to the sum
    if raw == numba.types.float32:
        return lambda raw: raw                        # float32 rows (the transposed LM head)
    return None


# Inputs per step of _dot_rows4_int8: one vector register of float32, as wide as the CPU's
# (16 with AVX-512, 8 with AVX2): a 512-bit loop on an AVX2 CPU would be split in two by LLVM.
DOT_LANES = cpu.vector_bits() // 32


def _emit_int8_dot_loop(context, builder, x_addresses, weight_addresses, n):
    """LLVM IR for sums[a][b] = x_a[:n] . float(weights_b[:n]), the x rows float32 and the weight
    rows int8 at the given addresses (int64), n a multiple of DOT_LANES; returns the sums, row by
    row, as float32 values. One <DOT_LANES x float> running sum per pair, reduced at the end."""
    ir = llvmlite.ir
    float_type, int64 = ir.FloatType(), ir.IntType(64)
    vector = ir.VectorType(float_type, DOT_LANES)
    bytes_type = ir.VectorType(ir.IntType(8), DOT_LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                      f"llvm.fma.v{DOT_LANES}f32")
    start = builder.block
    loop = builder.append_basic_block("int8_dot.loop")
    done = builder.append_basic_block("int8_dot.done")
    zero = ir.Constant(vector, [0.0] * DOT_LANES)
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(int64, 0)), loop, done)
    builder.position_at_end(loop)                          # for i in range(0, n, DOT_LANES):
    i = builder.phi(int64)
    sums = [[builder.phi(vector) for _ in weight_addresses] for _ in x_addresses]
    x_vectors = [builder.load(builder.inttoptr(builder.add(address, builder.mul(i, ir.Constant(int64, 4))),
                                               vector.as_pointer()), align=4) for address in x_addresses]
    weight_vectors = [builder.sitofp(builder.load(builder.inttoptr(builder.add(address, i), bytes_type.as_pointer()),
                                                  align=1), vector) for address in weight_addresses]
    updated = [[builder.call(fma, [x_vector, weights, running])    # sums[a][b] += x_a[i:i+L] * w_b[i:i+L]
                for weights, running in zip(weight_vectors, row)] for x_vector, row in zip(x_vectors, sums)]
    i_next = builder.add(i, ir.Constant(int64, DOT_LANES))
    i.add_incoming(ir.Constant(int64, 0), start)
    i.add_incoming(i_next, loop)
    for row, new_row in zip(sums, updated):
        for running, new in zip(row, new_row):
            running.add_incoming(zero, start)
            running.add_incoming(new, loop)
    builder.cbranch(builder.icmp_signed("<", i_next, n), loop, done)
    builder.position_at_end(done)
    finals = []
    for new_row in updated:                                # (phi nodes first in a block, then the sums)
        for new in new_row:
            final = builder.phi(vector)
            final.add_incoming(zero, start)
            final.add_incoming(new, loop)
            finals.append(final)
    add_up = cgutils.get_or_insert_function(builder.module, ir.FunctionType(float_type, [float_type, vector]),
                                            f"llvm.vector.reduce.fadd.v{DOT_LANES}f32")
    return [builder.call(add_up, [ir.Constant(float_type, 0.0), final], fastmath=("reassoc",)) for final in finals]


def row_addresses(context, builder, array_type, array_value, first_row, count):
    """The int64 addresses of rows first_row .. first_row + count of a 2D (or 1D: count 1) array,
    for the LLVM loops here and in int8_dot.py."""
    int64 = llvmlite.ir.IntType(64)
    array = context.make_array(array_type)(context, builder, array_value)
    base = builder.ptrtoint(array.data, int64)
    if array_type.ndim == 1:
        return [base]
    row_bytes = builder.extract_value(array.strides, 0)
    return [builder.add(base, builder.mul(row_bytes, builder.add(first_row, llvmlite.ir.Constant(int64, k))))
            for k in range(count)]


@intrinsic
def _dot_rows4_int8(typingctx, x, data, first_row, n):
    """_dot_rows4 for int8 rows: an LLVM loop over explicit DOT_LANES-wide vectors.

    Numba's own loops are vectorised 8 wide even on AVX-512 CPUs (LLVM prefers 256-bit vectors on
    Intel's), and the tile kernel over int8 weights was bound by the widening arithmetic more than
    by memory on Emerald Rapids, so full-width vectors paid off there (BENCHMARKS.md). The same
    loop for bfloat16 and float16 did not, so those keep Numba's loop; so does the one-row kernel
    (matvec_out_in_one_row), where on Zen 4 Numba's loop streamed int8 faster.
    """
    def codegen(context, builder, signature, args):
        x_value, data_value, first_row_, n_ = args
        zero = llvmlite.ir.Constant(llvmlite.ir.IntType(64), 0)
        totals = _emit_int8_dot_loop(context, builder,
                                     row_addresses(context, builder, signature.args[0], x_value, zero, 1),
                                     row_addresses(context, builder, signature.args[1], data_value, first_row_, 4), n_)
        return context.make_tuple(builder, signature.return_type, totals)

    return numba.types.UniTuple(numba.types.float32, 4)(x, data, numba.types.intp, numba.types.intp), codegen


@intrinsic
def _dot_tile4x4_int8(typingctx, x, first_x_row, data, first_row, n):
    """Sums x[first_x_row + a, :n] . data[first_row + b, :n] for a, b = 0..3 (int8 rows), as a
    16-tuple s<a><b>: the batched decode kernel's 4 x 4 register tile in DOT_LANES-wide vectors."""
    def codegen(context, builder, signature, args):
        x_value, first_x_row_, data_value, first_row_, n_ = args
        totals = _emit_int8_dot_loop(context, builder,
                                     row_addresses(context, builder, signature.args[0], x_value, first_x_row_, 4),
                                     row_addresses(context, builder, signature.args[2], data_value, first_row_, 4), n_)
        return context.make_tuple(builder, signature.return_type, totals)

    intp = numba.types.intp
    return numba.types.UniTuple(numba.types.float32, 16)(x, intp, data, intp, intp), codegen


@njit(inline="always")
def _rows4_loop(x, data, first_row, start, stop):
    # sums x[start:stop] . widen(data[first_row + k, start:stop]), k = 0..3, in Numba's loop
    s0 = s1 = s2 = s3 = np.float32(0.0)
    w0, w1, w2, w3 = data[first_row], data[first_row + 1], data[first_row + 2], data[first_row + 3]
    for i in range(start, stop):
        v = x[i]
        s0 += v * widen(w0[i]); s1 += v * widen(w1[i]); s2 += v * widen(w2[i]); s3 += v * widen(w3[i])  # noqa: E702
    return s0, s1, s2, s3


@njit(inline="always")
def _tile4x4_loop(x, first_x_row, data, first_row, start, stop):
    # sums x[first_x_row + a, start:stop] . widen(data[first_row + b, start:stop]), a, b = 0..3
    x0, x1, x2, x3 = x[first_x_row], x[first_x_row + 1], x[first_x_row + 2], x[first_x_row + 3]
    w0, w1, w2, w3 = data[first_row], data[first_row + 1], data[first_row + 2], data[first_row + 3]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)                   # s<row><output>
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
    for i in range(start, stop):
        a, b, c, d = widen(w0[i]), widen(w1[i]), widen(w2[i]), widen(w3[i])
        v0, v1, v2, v3 = x0[i], x1[i], x2[i], x3[i]
        s00 += v0 * a; s01 += v0 * b; s02 += v0 * c; s03 += v0 * d    # noqa: E702
        s10 += v1 * a; s11 += v1 * b; s12 += v1 * c; s13 += v1 * d    # noqa: E702
        s20 += v2 * a; s21 += v2 * b; s22 += v2 * c; s23 += v2 * d    # noqa: E702
        s30 += v3 * a; s31 += v3 * b; s32 += v3 * c; s33 += v3 * d    # noqa: E702
    return s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33


def _vector_loop_applies(x, data):
    # the vector int8 loops read C-contiguous rows of float32 x and int8 weights
    return (x.layout == "C" and data.layout == "C" and x.dtype == numba.types.float32
            and data.dtype == numba.types.int8)


def _dot_rows4(x, data, first_row, n):
    """Sums x[:n] . widen(data[first_row + k, :n]) for k = 0..3, as a 4-tuple of float32."""
    raise NotImplementedError("_dot_rows4 is only callable from Numba-compiled code")


@overload(_dot_rows4, inline="always")
def _dot_rows4_by_type(x, data, first_row, n):
    # int8: the vector loop over the first n - n % DOT_LANES inputs, Numba's loop for the rest;
    # other types: Numba's loop. Inlined into the caller, so the loops get its fast-math flags
    # (which let them vectorise; compiled apart, bfloat16 decode steps fell by 10-15%).
    if not _vector_loop_applies(x, data):
        return lambda x, data, first_row, n: _rows4_loop(x, data, first_row, 0, n)

    def vectors_then_rest(x, data, first_row, n):
        wide = n - n % DOT_LANES
        a0, a1, a2, a3 = _dot_rows4_int8(x, data, first_row, wide)
        b0, b1, b2, b3 = _rows4_loop(x, data, first_row, wide, n)
        return a0 + b0, a1 + b1, a2 + b2, a3 + b3
    return vectors_then_rest


def _dot_tile4x4(x, first_x_row, data, first_row, n):
    """Sums x[first_x_row + a, :n] . widen(data[first_row + b, :n]), a, b = 0..3, as the 16-tuple
    s00, s01, ..., s33."""
    raise NotImplementedError("_dot_tile4x4 is only callable from Numba-compiled code")


@overload(_dot_tile4x4, inline="always")
def _dot_tile4x4_by_type(x, first_x_row, data, first_row, n):
    # as _dot_rows4
    if not _vector_loop_applies(x, data):
        return lambda x, first_x_row, data, first_row, n: _tile4x4_loop(x, first_x_row, data, first_row, 0, n)

    def vectors_then_rest(x, first_x_row, data, first_row, n):
        wide = n - n % DOT_LANES
        a = _dot_tile4x4_int8(x, first_x_row, data, first_row, wide)
        b = _tile4x4_loop(x, first_x_row, data, first_row, wide, n)
        return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6],
                a[7] + b[7], a[8] + b[8], a[9] + b[9], a[10] + b[10], a[11] + b[11], a[12] + b[12],
                a[13] + b[13], a[14] + b[14], a[15] + b[15])
    return vectors_then_rest


@njit(inline="always")
def _row_loop(x, data, row, start, stop):
    # x[start:stop] . widen(data[row, start:stop]), in Numba's loop
    total = np.float32(0.0)
    w = data[row]
    for i in range(start, stop):
        total += x[i] * widen(w[i])
    return total


@njit(inline="always")
def finish_output(total, scale, bias, apply_gelu):
    # one output from its raw dot product: times the row's scale, plus bias, then GELU if asked
    total = total * scale + bias
    return gelu_scalar(total) if apply_gelu else total


@threaded_and_serial(fastmath=REDUCE)
def matvec_out_in(x, data, scale, bias, apply_gelu, out):
    # x [m, n_in] @ widen(data [n_out, n_in]).T * scale[n_out] + bias -> out [m, n_out]: dot
    # products over contiguous weight rows. data: float32 (an [n_out, n_in] matrix such as the
    # tied LM head wte), uint16 (bfloat16), int16 (float16 bits) or int8; scale is all ones
    # except for int8.
    # Register tile: four outputs (weight rows) by four rows of x, sixteen running sums. Each
    # widened weight serves four rows and each x value four outputs, and the sixteen sums are
    # independent chains, so the FMA units are not left waiting on one sum's latency (with one
    # output at a time, batch-8 decode steps ran 15-30% slower, BENCHMARKS.md). Rows of x
    # past a multiple of four go one at a time (still four outputs); the last n_out % 4 outputs
    # one by one.
    m, n_in = x.shape
    n_out = data.shape[0]
    n_groups = n_out // 4
    ahead = prefetch_distance(data)                        # rows
    for group in prange(n_groups + n_out % 4):
        if group >= n_groups:                              # a leftover output, alone
            o = 4 * n_groups + (group - n_groups)
            for r in range(m):
                out[r, o] = finish_output(_row_loop(x[r], data, o, 0, n_in), scale[o], bias[o], apply_gelu)
            continue
        o = 4 * group
        for k in range(4):
            prefetch_row(data, o + ahead + k)
        r = 0
        while r + 4 <= m:
            (s00, s01, s02, s03, s10, s11, s12, s13,                          # s<row><output>
             s20, s21, s22, s23, s30, s31, s32, s33) = _dot_tile4x4(x, r, data, o, n_in)
            out[r, o], out[r, o + 1], out[r, o + 2], out[r, o + 3] = s00, s01, s02, s03
            out[r + 1, o], out[r + 1, o + 1], out[r + 1, o + 2], out[r + 1, o + 3] = s10, s11, s12, s13
            out[r + 2, o], out[r + 2, o + 1], out[r + 2, o + 2], out[r + 2, o + 3] = s20, s21, s22, s23
            out[r + 3, o], out[r + 3, o + 1], out[r + 3, o + 2], out[r + 3, o + 3] = s30, s31, s32, s33
            r += 4
        while r < m:
            out[r, o], out[r, o + 1], out[r, o + 2], out[r, o + 3] = _dot_rows4(x[r], data, o, n_in)
            r += 1
        for k in range(o, o + 4):                          # scale, bias, GELU on the raw sums
            for r in range(m):
                out[r, k] = finish_output(out[r, k], scale[k], bias[k], apply_gelu)


@njit(parallel=True, fastmath=REDUCE, error_model="numpy", cache=True)
def matvec_out_in_one_row(x, data, scale, bias, apply_gelu, prefetch_ahead, out):
    # x [n_in] @ widen(data [n_out, n_in]).T * scale[n_out] + bias -> out [n_out], one output at
    # a time. Batch-1 decode has no x rows to share a widened weight with, so the 4 x 4 tile of
    # matvec_out_in buys nothing there, and its four interleaved row streams per thread kept
    # fewer bytes in flight than one sequential stream does: the CPU's prefetcher follows a
    # single stream on its own (a 124M bfloat16 step of these products: 10.1 ms tiled, 7.8 ms
    # one row at a time, on Zen 4; BENCHMARKS.md). prefetch_ahead > 0 also asks for the row that
    # many rows ahead, for weights whose widening is slow enough to fall behind the stream
    # (int8); 0 leaves it all to the hardware. prange gives each thread a contiguous band of rows.
    # Numba's loop for every type, int8 included: here the explicit vector loop of the tile
    # kernel streamed int8 slower (decode steps 167-195 tok/s against 186-210 with Numba's loop,
    # alternating fresh processes on Zen 4; BENCHMARKS.md). Threaded only, unlike the other
    # kernels: Numba's serial build of this loop sums int8 rows in another order (last-bit
    # differences), and one build makes the fused decode step (decode_step.py) and linear()
    # compute alike for every matrix size. GPT-2's smallest matrix (768 x 768) is threaded anyway.
    n_out, n_in = data.shape
    for o in prange(n_out):
        if prefetch_ahead > 0:
            prefetch_row(data, o + prefetch_ahead)
        out[o] = finish_output(_row_loop(x, data, o, 0, n_in), scale[o], bias[o], apply_gelu)


def stored_rows(weight):
    """The array the kernels here read for a PackedWeight: its data, float16 as int16 bits
    (Numba has no float16 type; widen converts the bits)."""
    return weight.data.view(np.int16) if weight.storage == "float16" else weight.data


@njit(error_model="numpy", cache=True)
def widen_rows(data, scale, out):
    # data [rows, cols] packed (see widen), scale [rows] -> out [rows, cols] float32
    for r in range(data.shape[0]):
        for c in range(data.shape[1]):
            out[r, c] = widen(data[r, c]) * scale[r]
