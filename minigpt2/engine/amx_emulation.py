"""The AMX tile instructions of amx.py in plain Numba, so that the AMX path runs on any CPU.

Chosen by the environment variable ``MINIGPT2_AMX=emulate`` (read once, when amx.py is imported):
then `amx.available()` is True on any x86-64 or 64-bit ARM CPU and amx.py's kernels call these
functions instead of its inline-assembly intrinsics. Everything else in amx.py (packing, blocking,
the leftover rows, scale, bias, attention's softmax) is the code that runs on a real AMX CPU, which
is what the tests need to reach on every machine. Slow: for tests only.

The four 16x16 float32 sum tiles (tmm0-3) live in a [4, 16, 16] float32 array, `tiles`, that
`tiles_configure` returns and the other functions take; the native intrinsics take the same
argument and ignore it. Operands are read where the kernels point the tile loads: raw addresses
with a row stride in bytes, as TILELOADD reads them.

TDPBF16PS as Intel's SDM defines it: for each row m of the sum and column n,
    for k in 0 .. 15:  sum[m, n] += A[m, 2k] * B[k, 2n];  sum[m, n] += A[m, 2k + 1] * B[k, 2n + 1]
in float32, one rounding per addition (a product of two bfloat16 is exact in float32), inputs
that are denormal read as zero and denormal sums flushed to zero.
"""

import numba
import numpy as np
from numba import njit
from numba.extending import intrinsic

from minigpt2.engine.jit import bits_to_float32

ROWS = 16             # rows of a tile
ROW_BYTES = 64        # bytes of a tile row: 32 bfloat16 or 16 float32
PAIRS = ROW_BYTES // 4          # 16: bfloat16 pairs per row of an operand tile, columns of a sum tile
SMALLEST_NORMAL = np.float32(2.0 ** -126)


def _pointer_intrinsic(element_type):
    @intrinsic
    def as_pointer(typingctx, address):
        pointer_type = numba.types.CPointer(element_type)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer_type))
        return pointer_type(numba.types.intp), codegen
    return as_pointer


uint16_pointer = _pointer_intrinsic(numba.types.uint16)
float32_pointer = _pointer_intrinsic(numba.types.float32)


@njit(inline="always")
def _load_bfloat16_tile(address, stride, out):
    # 16 rows of 64 bytes, `stride` bytes apart -> out [16, 32] float32 (bfloat16 widened;
    # a denormal reads as zero, as TDPBF16PS treats its inputs)
    for r in range(ROWS):
        row = numba.carray(uint16_pointer(address + r * stride), (2 * PAIRS,))
        for c in range(2 * PAIRS):
            bits = np.uint32(row[c])
            if bits & np.uint32(0x7F80) == 0:
                bits &= np.uint32(0x8000)
            out[r, c] = bits_to_float32(bits << np.uint32(16))


@njit(inline="always")
def _dot_bfloat16_pairs(sums, left, right):
    # sums [16, 16] += left [16, 32] @ right pairs [16, 32]: TDPBF16PS, in the SDM's order
    for m in range(ROWS):
        for k in range(PAIRS):
            for n in range(PAIRS):
                total = sums[m, n] + left[m, 2 * k] * right[k, 2 * n]
                total = total + left[m, 2 * k + 1] * right[k, 2 * n + 1]
                sums[m, n] = total if abs(total) >= SMALLEST_NORMAL else total * np.float32(0.0)


@njit
def tiles_configure(config_address):
    """LDTILECFG's stand-in: the four sum tiles, zeroed, plus room for the four operand tiles."""
    return np.zeros((8, ROWS, 2 * PAIRS), dtype=np.float32)


@njit
def tiles_release(tiles):
    """TILERELEASE's stand-in: nothing to give back."""


@njit
def sums_zero(tiles):
    """Zero the four 16x16 float32 sums (tiles 0-3)."""
    tiles[:4] = 0.0


@njit
def sums_add_products(tiles, weight_address, weight_stride, x_address, x_stride):
    """amx._sums_add_products: tiles 4, 5 = weight rows 0-15, 16-31; tiles 6, 7 = x pair columns
    0-15, 16-31 (the second 64 bytes along); tile 0 += 4 @ 6, 1 += 4 @ 7, 2 += 5 @ 6, 3 += 5 @ 7."""
    _load_bfloat16_tile(weight_address, weight_stride, tiles[4])
    _load_bfloat16_tile(weight_address + ROWS * weight_stride, weight_stride, tiles[5])
    _load_bfloat16_tile(x_address, x_stride, tiles[6])
    _load_bfloat16_tile(x_address + ROW_BYTES, x_stride, tiles[7])
    _dot_bfloat16_pairs(tiles[0, :, :PAIRS], tiles[4], tiles[6])
    _dot_bfloat16_pairs(tiles[1, :, :PAIRS], tiles[4], tiles[7])
    _dot_bfloat16_pairs(tiles[2, :, :PAIRS], tiles[5], tiles[6])
    _dot_bfloat16_pairs(tiles[3, :, :PAIRS], tiles[5], tiles[7])


@njit
def sums_store(tiles, address, stride):
    """amx._sums_store: the four sums as one [32, 32] float32 block at `address`, rows `stride`
    bytes apart (tile 0 top left, 1 top right, 2 bottom left, 3 bottom right)."""
    for tile in range(4):
        base = address + (tile // 2) * ROWS * stride + (tile % 2) * ROW_BYTES
        for r in range(ROWS):
            row = numba.carray(float32_pointer(base + r * stride), (PAIRS,))
            for c in range(PAIRS):
                row[c] = tiles[tile, r, c]
