"""The packed weight formats written out from their definitions, in float64, for expected values.

Independent of minigpt2.weights.packed: the tests compare what the engine computes over a
PackedWeight with products over these matrices, so a wrong rule in the packing (an int8 scale
of max|w| / 127.5, a rounding that is not to nearest even) fails them.
"""

import numpy as np


def round_to_bfloat16(w):
    """float32 values rounded to the nearest bfloat16 (8 significant bits), ties to even, as
    float64: per value, the spacing of bfloat16 numbers in its binade is 2**(exponent - 7)."""
    w = np.asarray(w, np.float64)
    exponent = np.floor(np.log2(np.where(w == 0, 1.0, np.abs(w))))
    spacing = 2.0 ** (exponent - 7)
    return np.rint(w / spacing) * spacing           # rint: halves to the even multiple


def int8_per_channel(w):
    """Symmetric per-output-channel int8 of w [n_in, n_out]: s = max|w[:, o]| / 127 (stored as
    float32), q = round(w / s) in -127..127 -> (q [n_in, n_out] float64, s [n_out] float64)."""
    w = np.asarray(w, np.float32).astype(np.float64)
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32).astype(np.float64)
    q = np.clip(np.rint(w / np.where(scale > 0, scale, 1.0)), -127, 127)
    return q, scale


def dequantized(w, storage):
    """The matrix w [n_in, n_out] float32 as `storage` holds it, as float64 [n_in, n_out]."""
    w = np.asarray(w, np.float32)
    if storage == "bfloat16":
        return round_to_bfloat16(w)
    if storage == "float16":
        return w.astype(np.float16).astype(np.float64)          # IEEE half, as NumPy rounds it
    if storage == "int8":
        q, scale = int8_per_channel(w)
        return q * scale
    raise ValueError(f"unknown storage {storage!r}")
