"""Matrix products on Intel AMX tiles: bfloat16 products, float32 sums, for prefill.

Used only when the user allows bfloat16 products, as in PyTorch:

    minigpt2.set_float32_matmul_precision("medium")

and only where the CPU has AMX (Intel Xeon from Sapphire Rapids on) and Linux lets this process
use it (`available()`). Everywhere else `linear_op.py` and `attention_op.py` compute in
float32 as always; policy.py decides which calls come here (`bfloat16_tiles_allowed`).

AMX is a second register file of eight "tiles", each up to 16 rows of 64 bytes, and one
instruction, TDPBF16PS, that multiplies a 16x32 bfloat16 tile by a 32x16 one and adds the 16x16
float32 result to a third tile: 8,192 multiply-adds, where an AVX-512 FMA does 16. The left
operand is read as plain rows; the right one must hold pairs of consecutive inputs side by side
(its row i = inputs 2i and 2i + 1 of 16 columns, as uint32). Every product here keeps four 16x16
sums (a 32 x 32 block) in tiles 0-3 and adds, per 32 inputs, two left tiles (4, 5) times two
right tiles (6, 7): `_sums_add_products`.

* `linear`: x [m, n_in] @ W [n_in, n_out] is computed as its transpose, out.T = W.T @ x.T, so that
  the left operand is the weight stored one output channel per row ([n_out, n_in], as
  weights.packed.PackedWeight keeps it): a bfloat16 weight is read where it lies, with no copy. x is
  rounded to bfloat16 and laid out as input pairs, 32 rows to a block (`_pack_x`); each 32 x 32
  block of sums is written back transposed, with the int8 scale and the bias.
* `attention`: per head and block of 32 query rows, scores = q @ k.T (queries on the left, keys
  packed as x is), a masked softmax along each row in float32, weights rounded to bfloat16, then
  out = weights @ v (weights on the left, values as pairs of consecutive keys).

The instructions are inline assembly in Numba intrinsics (LLVM knows the mnemonics; Numba's JIT
needs its assembly parser switched on). Precision: both operands of every product are rounded
to bfloat16 (8 significant bits); each product is exact in float32 and the sums are float32.
With MINIGPT2_AMX=emulate the instructions are amx_emulation.py's plain-Numba stand-ins, so that
the tests run this whole file on any CPU.
"""

import weakref

import llvmlite.ir
import numba
import numpy as np
from numba import njit, prange
from numba.extending import intrinsic

from minigpt2.engine import amx_emulation, cpu
from minigpt2.engine.jit import REDUCE, bits_to_float32, exp, float32_bits, gelu_inplace, ones, row_max, visible_extent
from minigpt2.engine.matvec import widen
from minigpt2.weights.packed import PackedWeight, aligned_empty

ROWS = 16         # rows of a tile
BLOCK = 32        # outputs and rows of x per thread step: 2 x 2 tiles of 16
PAIR_COLUMNS = 32     # inputs per tile step: 16 uint32 pairs of bfloat16 = 64 bytes per row
# Rows of x per chunk: a chunk's packed x (chunk x n_in x 2 bytes, 768 KB at n_in = 3072) stays
# in the thread's L2 cache while every weight block passes over it.
CHUNK_ROWS = 128

_available = None
EMULATED = cpu.AMX_EMULATED


def available():
    """True when this process can run the AMX kernels (checked once, then remembered): see
    cpu.enable_amx; with MINIGPT2_AMX=emulate, any x86-64 or 64-bit ARM CPU (amx_emulation.py)."""
    global _available
    if _available is None:
        _available = cpu.enable_amx()
    return _available


def _tile_config():
    """The 64-byte tile configuration: palette 1, eight tiles of 16 rows x 64 bytes."""
    config = np.zeros(64, dtype=np.uint8)
    config[0] = 1                                  # palette 1
    config[16:32].view(np.uint16)[:] = 64          # bytes per row, tiles 0-7
    config[48:56] = ROWS                           # rows, tiles 0-7
    return config


_CONFIG = _tile_config()


# --------------------------------------------------------------------------------------------
# the tile instructions (AT&T operand order: sources first, destination last)

def _asm(builder, text, operands=()):
    function_type = llvmlite.ir.FunctionType(llvmlite.ir.VoidType(), [llvmlite.ir.IntType(64)] * len(operands))
    constraints = ",".join(["r"] * len(operands) + ["~{memory}"])
    builder.asm(function_type, text, constraints, list(operands), True)


@intrinsic
def _tiles_configure(typingctx, address):
    """LDTILECFG: load the tile configuration at `address` (this thread's tiles, all zeroed).
    Returns the handle the other intrinsics take (0 here; the emulation's sum tiles there)."""
    def codegen(context, builder, signature, args):
        _asm(builder, "ldtilecfg ($0)", args)
        return context.get_constant(numba.types.intp, 0)
    return numba.types.intp(numba.types.intp), codegen


@intrinsic
def _tiles_release(typingctx, tiles):
    """TILERELEASE: this thread is done with the tiles (the OS need not save them any more)."""
    def codegen(context, builder, signature, args):
        _asm(builder, "tilerelease")
        return context.get_dummy_value()
    return numba.types.void(numba.types.intp), codegen


@intrinsic
def _sums_zero(typingctx, tiles):
    """Zero the four 16x16 float32 sums (tiles 0-3)."""
    def codegen(context, builder, signature, args):
        _asm(builder, "tilezero %tmm0\n tilezero %tmm1\n tilezero %tmm2\n tilezero %tmm3")
        return context.get_dummy_value()
    return numba.types.void(numba.types.intp), codegen


@intrinsic
def _sums_add_products(typingctx, tiles, weight_address, weight_stride, x_address, x_stride):
    """One step of 32 inputs: sums[2 x 2 tiles] += weight rows [32, 32] @ x pairs [16, 32 x 2].

    Tiles 4 and 5 take weight rows 0-15 and 16-31 (64 bytes = 32 bfloat16 inputs each, rows
    `weight_stride` bytes apart); tiles 6 and 7 take x columns 0-15 and 16-31 (16 rows of input
    pairs, `x_stride` bytes apart). Tile 0 += 4 @ 6, 1 += 4 @ 7, 2 += 5 @ 6, 3 += 5 @ 7.
    """
    def codegen(context, builder, signature, args):
        _, weight, weight_stride_, x, x_stride_ = args
        weight_second = builder.add(weight, builder.mul(weight_stride_, context.get_constant(numba.types.intp, ROWS)))
        x_second = builder.add(x, context.get_constant(numba.types.intp, 64))
        _asm(builder, "tileloadd ($0,$1,1), %tmm4\n tileloadd ($2,$1,1), %tmm5\n"
                      " tileloadd ($3,$4,1), %tmm6\n tileloadd ($5,$4,1), %tmm7\n"
                      " tdpbf16ps %tmm6, %tmm4, %tmm0\n tdpbf16ps %tmm7, %tmm4, %tmm1\n"
                      " tdpbf16ps %tmm6, %tmm5, %tmm2\n tdpbf16ps %tmm7, %tmm5, %tmm3",
             [weight, weight_stride_, weight_second, x, x_stride_, x_second])
        return context.get_dummy_value()
    intp = numba.types.intp
    return numba.types.void(intp, intp, intp, intp, intp), codegen


@intrinsic
def _sums_store(typingctx, tiles, address, stride):
    """Write the four sums as one [32, 32] float32 block at `address`, rows `stride` bytes apart:
    tile 0 holds rows 0-15 x columns 0-15, tile 1 rows 0-15 x 16-31, tile 2 rows 16-31 x 0-15,
    tile 3 rows 16-31 x 16-31 (rows: the weight rows of _sums_add_products; columns: x's)."""
    def codegen(context, builder, signature, args):
        _, base, stride_ = args
        sixteen_rows = builder.mul(stride_, context.get_constant(numba.types.intp, ROWS))
        sixty_four = context.get_constant(numba.types.intp, 64)
        addresses = [base, builder.add(base, sixty_four), builder.add(base, sixteen_rows),
                     builder.add(builder.add(base, sixteen_rows), sixty_four)]
        _asm(builder, "tilestored %tmm0, ($0,$4,1)\n tilestored %tmm1, ($1,$4,1)\n"
                      " tilestored %tmm2, ($2,$4,1)\n tilestored %tmm3, ($3,$4,1)", addresses + [stride_])
        return context.get_dummy_value()
    return numba.types.void(numba.types.intp, numba.types.intp, numba.types.intp), codegen


if EMULATED:
    _tiles_configure, _tiles_release = amx_emulation.tiles_configure, amx_emulation.tiles_release
    _sums_zero, _sums_add_products, _sums_store = (amx_emulation.sums_zero, amx_emulation.sums_add_products,
                                                   amx_emulation.sums_store)
# Numba's on-disk cache does not know which instructions a kernel was compiled with: only the native
# build of the two kernels that use them is cached.
_CACHE_TILE_KERNELS = not EMULATED


# --------------------------------------------------------------------------------------------
# operands


@njit(inline="always")
def _bfloat16_bits(value):
    # float32 -> bfloat16 bits (uint32, low 16 bits), round to nearest even; NaN stays NaN
    bits = float32_bits(np.float32(value))
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    is_nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return ((bits >> np.uint32(16)) | np.uint32(0x40)) if is_nan else rounded


@njit(inline="always")
def _pack_rows(x, r0, pairs):
    # rows r0 .. r0 + 32 of x [rows, n_in] float32 (any strides) -> pairs [n_in / 2, 32] uint32:
    # pairs[i, r] holds bfloat16 x[r0 + r, 2i] in its low half and x[r0 + r, 2i + 1] in its high
    # half (the little-endian pair TDPBF16PS reads); rows past x's are zero.
    rows, n_in = x.shape
    for r in range(BLOCK):
        if r0 + r < rows:
            for i in range(n_in // 2):
                low = _bfloat16_bits(x[r0 + r, 2 * i])
                high = _bfloat16_bits(x[r0 + r, 2 * i + 1])
                pairs[i, r] = low | (high << np.uint32(16))
        else:
            pairs[:, r] = 0


@njit(parallel=True, error_model="numpy", cache=True)
def _pack_x(x, x_blocks):
    # x [m, n_in] float32 -> x_blocks [m_padded / 32, n_in / 2, 32] uint32: each block of 32 rows
    # as input pairs (_pack_rows), contiguous, so that the two x tiles of one step are 2 KB in a
    # row. (Laid out [n_in / 2, m_padded], one x.T for all rows, the 512 x 3072 @ 3072 x 768
    # product took twice as long: each tile row was m_padded * 4 bytes from the next.)
    for block in prange(x_blocks.shape[0]):
        _pack_rows(x, block * BLOCK, x_blocks[block])


@njit(parallel=True, error_model="numpy", cache=True)
def _packed_rows_to_bfloat16(data, out):
    # data [n_out, n_in] packed (int8 values, float16 bits as int16, or bfloat16 bits) -> out
    # [n_out_padded, n_in_padded] bfloat16 bits, zero-padded. int8 values are exact in bfloat16
    # (the per-row scale is applied to the sums); float16 rounds to bfloat16's 8 bits.
    n_out, n_in = data.shape
    for o in prange(out.shape[0]):
        for i in range(out.shape[1]):
            out[o, i] = np.uint16(_bfloat16_bits(widen(data[o, i]))) if (o < n_out and i < n_in) else 0


@njit(parallel=True, error_model="numpy", cache=True)
def _float32_to_bfloat16_rows(rows, out):
    # rows [n_out, n_in] float32, any strides (the checkpoint's [n_in, n_out] weight seen as .T,
    # or wte) -> out [n_out_padded, n_in_padded] bfloat16 bits, zero-padded; 32 x 32 blocks, so
    # that a transposing read stays in cache
    n_out, n_in = rows.shape
    for block in prange(out.shape[0] // BLOCK):
        o0 = block * BLOCK
        for i0 in range(0, out.shape[1], BLOCK):
            for o in range(o0, o0 + BLOCK):
                for i in range(i0, i0 + BLOCK):
                    out[o, i] = np.uint16(_bfloat16_bits(rows[o, i])) if (o < n_out and i < n_in) else 0


# --------------------------------------------------------------------------------------------
# the product


@njit(parallel=True, error_model="numpy", cache=_CACHE_TILE_KERNELS)
def _matmul_tiles(x_blocks, m, weight_rows, scale, bias, config, out):
    # x_blocks [m_padded / 32, n_in / 2, 32] uint32 (see _pack_x), weight_rows [n_out_padded, n_in]
    # bfloat16 bits, scale / bias [n_out] -> out [m, n_out] = (x @ weight_rows.T) * scale + bias.
    # Work item j: chunk j // n_blocks of CHUNK_ROWS rows of x, times weight block j % n_blocks
    # (32 rows); consecutive items share a chunk, so each thread keeps its chunk in L2.
    n_row_blocks, n_pairs, _ = x_blocks.shape
    n_out = out.shape[1]
    n_in = 2 * n_pairs
    n_blocks = weight_rows.shape[0] // BLOCK         # full blocks only (see _products_past_blocks)
    per_chunk = CHUNK_ROWS // BLOCK
    n_chunks = (n_row_blocks + per_chunk - 1) // per_chunk
    weight_stride = n_in * 2                      # bytes from one weight row to the next
    for j in prange(n_chunks * n_blocks):
        tiles = _tiles_configure(config.ctypes.data)
        sums = _aligned_scratch(BLOCK, BLOCK, np.float32)                      # [output, row of x]
        chunk, block = j // n_blocks, j % n_blocks
        o0 = block * BLOCK
        n_outputs = min(BLOCK, n_out - o0)
        weight_base = weight_rows.ctypes.data + o0 * weight_stride
        for row_block in range(chunk * per_chunk, min(n_row_blocks, (chunk + 1) * per_chunk)):
            r0 = row_block * BLOCK
            x_base = x_blocks[row_block].ctypes.data
            _sums_zero(tiles)
            for i0 in range(0, n_in, PAIR_COLUMNS):
                _sums_add_products(tiles, weight_base + i0 * 2, weight_stride, x_base + (i0 // 2) * BLOCK * 4, BLOCK * 4)
            _sums_store(tiles, sums.ctypes.data, BLOCK * 4)
            for r in range(min(BLOCK, m - r0)):                    # transposed back into out
                for o in range(n_outputs):
                    out[r0 + r, o0 + o] = sums[o, r] * scale[o0 + o] + bias[o0 + o]
        _tiles_release(tiles)


@njit(error_model="numpy", fastmath=REDUCE, cache=True)
def _products_past_blocks(x_blocks, m, weight_rows, first, scale, bias, out):
    # the outputs first .. n_out that _matmul_tiles leaves (fewer than 32), from the same
    # bfloat16 operands: out[r, o] = sum_i x_pair_i . weight_rows[o, 2i : 2i + 2] * scale + bias
    n_pairs = x_blocks.shape[1]
    for o in range(first, out.shape[1]):
        for r in range(m):
            pairs = x_blocks[r // BLOCK, :, r % BLOCK]
            total = np.float32(0.0)
            for i in range(n_pairs):
                x_low = bits_to_float32(pairs[i] << np.uint32(16))
                x_high = bits_to_float32(pairs[i] & np.uint32(0xFFFF0000))
                total += (x_low * bits_to_float32(np.uint32(weight_rows[o, 2 * i]) << np.uint32(16))
                          + x_high * bits_to_float32(np.uint32(weight_rows[o, 2 * i + 1]) << np.uint32(16)))
            out[r, o] = total * scale[o] + bias[o]


@njit(inline="always")
def _aligned_scratch(rows, cols, dtype):
    # np.empty((rows, cols), dtype) starting on a 64-byte boundary (see weights.packed.aligned_empty)
    spare = np.empty(rows * cols + 64, dtype=dtype)
    skip = (-spare.ctypes.data % 64) // spare.itemsize
    return spare[skip:skip + rows * cols].reshape(rows, cols)


@njit(inline="always")
def _padded(n, multiple):
    # n rounded up to a multiple of `multiple`
    return (n + multiple - 1) // multiple * multiple


def uses_weight_as_stored(weight):
    """Whether `bfloat16_weight_rows(weight)` is the stored array itself (nothing converted per call)."""
    return (isinstance(weight, PackedWeight) and weight.storage == "bfloat16" and weight.rows_are_outputs
            and weight.data.shape[1] % PAIR_COLUMNS == 0)


# float32 weights converted once: id(weight) -> (rows, None), dropped with the weight
_converted_float32 = {}


def bfloat16_weight_rows(weight):
    """A linear weight as bfloat16 rows for `linear`: ([n_out_padded, n_in_padded] uint16, scale).

    A packed bfloat16 weight whose n_in is a multiple of 32 is used as stored, however many rows
    (no copy; `linear` computes the outputs past the last full block of 32 apart). Packed
    int8 (exact in bfloat16; its scale [n_out] is returned) and float16 are converted for this
    call: a pass without a transpose. A float32 weight ([n_in, n_out], the checkpoint's layout,
    or a transposed view such as wte.T) is transposed and rounded, a pass as long as a layer's prefill
    matmul, so a read-only one (a checkpoint's memory map) is converted once and kept
    until the weight itself is freed (+50% of its bytes); a writeable one may change between
    calls and is converted every time.
    """
    n_in, n_out = weight.shape
    shape = (_padded(n_out, BLOCK), _padded(n_in, PAIR_COLUMNS))
    if isinstance(weight, PackedWeight) and weight.rows_are_outputs:
        if uses_weight_as_stored(weight):
            return weight.data, None
        rows = aligned_empty(shape, np.uint16)
        data = weight.data.view(np.int16) if weight.storage == "float16" else weight.data
        _packed_rows_to_bfloat16(data, rows)
        return rows, weight.scale
    weight = np.asarray(weight, dtype=np.float32)
    cached = _converted_float32.get(id(weight))
    if cached is not None:
        return cached
    rows = aligned_empty(shape, np.uint16)
    _float32_to_bfloat16_rows(weight.T, rows)
    if not weight.flags.writeable:
        _converted_float32[id(weight)] = (rows, None)
        weakref.finalize(weight, _converted_float32.pop, id(weight), None)
    return rows, None


def linear(x2, weight_rows, scale, bias, apply_gelu, out):
    """out [m, n_out] = gelu?((x2 [m, n_in] @ W) * scale + bias), W given by
    `bfloat16_weight_rows` as weight_rows [>= n_out, n_in_padded]; scale [n_out] (ones if None),
    bias [n_out] float32. Both operands rounded to bfloat16, sums in float32."""
    if not available():
        raise RuntimeError("amx.linear called on a machine without AMX (check amx.available())")
    m, n_in = x2.shape
    x_blocks = aligned_empty((_padded(m, BLOCK) // BLOCK, weight_rows.shape[1] // 2, BLOCK), np.uint32)
    if weight_rows.shape[1] != n_in:              # inputs padded to a multiple of 32: zeros
        x2 = np.pad(x2, ((0, 0), (0, weight_rows.shape[1] - n_in)))
    _pack_x(x2, x_blocks)
    if scale is None:
        scale = ones(out.shape[1])
    _matmul_tiles(x_blocks, m, weight_rows, scale, bias, _CONFIG, out)
    first_left = weight_rows.shape[0] // BLOCK * BLOCK
    if first_left < out.shape[1]:                 # rows past the last full block (an unpadded stored weight)
        _products_past_blocks(x_blocks, m, weight_rows, first_left, scale, bias, out)
    if apply_gelu:       # a pass of its own: inside the kernel's transposing loop it did not vectorise
        gelu_inplace[False](out.reshape(-1))
    return out


# --------------------------------------------------------------------------------------------
# attention


@njit(parallel=True, error_model="numpy", cache=True)
def _attention_operands(query, key, value, query_rows, key_blocks, value_pairs):
    # query [b, h, t, d], key / value [b, h, s, d] float32, any strides ->
    #   query_rows [b, h, t_padded, d] uint16: bfloat16 queries (zero rows past t)
    #   key_blocks [b, h, s_padded / 32, d / 2, 32] uint32: each block of 32 keys as _pack_x
    #   value_pairs [b, h, s_padded / 2, d] uint32: bfloat16 values of keys 2j (low half) and
    #     2j + 1 (high half) side by side, as TDPBF16PS reads its right operand (zero past s)
    b, h, t, d = query.shape
    s = key.shape[2]
    for item in prange(b * h):
        bi, hi = item // h, item % h
        for r in range(query_rows.shape[2]):
            for c in range(d):
                query_rows[bi, hi, r, c] = np.uint16(_bfloat16_bits(query[bi, hi, r, c])) if r < t else 0
        for block in range(key_blocks.shape[2]):
            _pack_rows(key[bi, hi], block * BLOCK, key_blocks[bi, hi, block])
        for jp in range(value_pairs.shape[2]):
            for c in range(d):
                low = _bfloat16_bits(value[bi, hi, 2 * jp, c]) if 2 * jp < s else np.uint32(0)
                high = _bfloat16_bits(value[bi, hi, 2 * jp + 1, c]) if 2 * jp + 1 < s else np.uint32(0)
                value_pairs[bi, hi, jp, c] = low | (high << np.uint32(16))


@njit(parallel=True, fastmath=REDUCE, error_model="numpy", cache=_CACHE_TILE_KERNELS)
def _attention_tiles(query_rows, key_blocks, value_pairs, mask, extent, scale, head_scale, config, out):
    # Operands from _attention_operands; mask [b, t, s] bool (True = may attend), extent [b, t]
    # (1 + the last key each query row may see), head_scale [h] -> out [b, h, t, d].
    # Work item: one batch row, head and block of 32 query rows, in three steps over keys
    # 0 .. n (n: the last key the block may see, rounded up to 32):
    #   1. scores [32, n] = queries [32, d] @ keys.T [d, n]         (AMX, 32 keys at a time)
    #   2. masked softmax along each row, unnormalised: weights rounded to bfloat16, summed as
    #      rounded (so that each row's weights sum to exactly what divides it)
    #   3. out [32, d] = weights [32, n] @ values [n, d]            (AMX, 32 features at a time)
    #      times head_scale / (the row's sum)
    b, h, t_padded, d = query_rows.shape
    t = out.shape[2]
    n_blocks = t_padded // BLOCK
    query_stride = d * 2                       # bytes from one query row to the next
    value_stride = d * 4                       # bytes from one value pair row to the next
    for item in prange(b * h * n_blocks):
        bi, hi, r0 = item // (h * n_blocks), (item // n_blocks) % h, (item % n_blocks) * BLOCK
        rows = min(BLOCK, t - r0)
        n = 0
        for r in range(rows):
            n = max(n, extent[bi, r0 + r])
        if n == 0:                             # no row of the block sees any key
            out[bi, hi, r0:r0 + rows] = 0.0
            continue
        n_padded = _padded(n, BLOCK)
        tiles = _tiles_configure(config.ctypes.data)
        scores = _aligned_scratch(BLOCK, n_padded, np.float32)                      # [query row, key]
        weights = _aligned_scratch(BLOCK, n_padded, np.uint16)                      # bfloat16 bits
        weights[:] = 0
        total = np.zeros(BLOCK, dtype=np.float32)
        row_lanes = np.empty(16, dtype=np.float32)                     # row_max's scratch
        # step 1
        query_base = query_rows[bi, hi, r0:].ctypes.data
        for j0 in range(0, n_padded, BLOCK):
            key_base = key_blocks[bi, hi, j0 // BLOCK].ctypes.data
            _sums_zero(tiles)
            for i0 in range(0, d, PAIR_COLUMNS):
                _sums_add_products(tiles, query_base + i0 * 2, query_stride, key_base + (i0 // 2) * BLOCK * 4, BLOCK * 4)
            _sums_store(tiles, scores.ctypes.data + j0 * 4, n_padded * 4)
        # step 2, one row at a time; rows past t keep zero weights
        for r in range(rows):
            x = scores[r]
            row_mask = mask[bi, r0 + r]
            for j in range(n):                 # scale, -inf on masked keys
                x[j] = x[j] * scale if row_mask[j] else np.float32(-np.inf)
            maxval = row_max(x, n, row_lanes)
            if maxval == -np.inf:             # the row sees no key: weights stay 0
                continue
            row_total = np.float32(0.0)
            for j in range(n):
                bits = _bfloat16_bits(exp(x[j] - maxval))
                weights[r, j] = np.uint16(bits)
                row_total += bits_to_float32(bits << np.uint32(16))
            total[r] = row_total
        # step 3
        weight_base = weights.ctypes.data
        value_base = value_pairs[bi, hi].ctypes.data
        block_out = _aligned_scratch(BLOCK, BLOCK, np.float32)                     # [query row, feature]
        for c0 in range(0, d, BLOCK):
            _sums_zero(tiles)
            for j0 in range(0, n_padded, PAIR_COLUMNS):
                _sums_add_products(tiles, weight_base + j0 * 2, n_padded * 2,
                                   value_base + (j0 // 2) * value_stride + c0 * 4, value_stride)
            _sums_store(tiles, block_out.ctypes.data, BLOCK * 4)
            for r in range(rows):
                factor = head_scale[hi] / total[r] if total[r] > 0 else np.float32(0.0)
                for c in range(BLOCK):
                    out[bi, hi, r0 + r, c0 + c] = block_out[r, c] * factor
        _tiles_release(tiles)


def attention(query, key, value, mask, scale, head_scale):
    """Prefill attention on AMX tiles: softmax(scale * q.k, masked) @ v with q, k, v and the
    softmax weights rounded to bfloat16, sums and the softmax in float32.

    query [b, h, t, d], key / value [b, h, s, d] float32 (d a multiple of 32), mask [b, t, s]
    bool, head_scale [h] -> out [b, h, t, d]. Masked keys get weight exactly 0; the caller zeroes
    non-finite values in keys no query sees (0 * NaN is NaN).
    """
    if not available():
        raise RuntimeError("amx.attention called on a machine without AMX (check amx.available())")
    b, h, t, d = query.shape
    s = key.shape[2]
    query_rows = aligned_empty((b, h, _padded(t, BLOCK), d), np.uint16)
    key_blocks = aligned_empty((b, h, _padded(s, BLOCK) // BLOCK, d // 2, BLOCK), np.uint32)
    value_pairs = aligned_empty((b, h, _padded(s, BLOCK) // 2, d), np.uint32)
    _attention_operands(query, key, value, query_rows, key_blocks, value_pairs)
    out = np.empty((b, h, t, d), dtype=np.float32)
    _attention_tiles(query_rows, key_blocks, value_pairs, mask, visible_extent(mask), np.float32(scale),
                     head_scale, _CONFIG, out)
    return out
