"""Checks and defaults for the model's call arguments: every bad input is a ValueError that says
what is wrong (the argument, the shape or value, what was expected), never a NumPy traceback.
"""

import numpy as np


def is_int(value):
    """An int (Python or NumPy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """An int or float (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def token_ids(ids, name, vocab_size, shape=None, allow=None):
    """ids as int64 [b, t] (a 1-D sequence is one row), each in 0..vocab_size-1 (or == allow)."""
    ids = as_array(ids, name)
    if ids.dtype == bool or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise ValueError(f"{name} must hold integers, got dtype {ids.dtype}")
    if ids.ndim == 1 and shape is None:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{name} must be [batch, seq] with seq >= 1, got shape {ids.shape}")
    if shape is not None and ids.shape != shape:
        raise ValueError(f"{name} has shape {ids.shape}, expected {shape} (as input_ids)")
    bad = ((ids < 0) | (ids >= vocab_size)) & (ids != allow if allow is not None else True)
    if bad.any():
        raise ValueError(f"{name} must be in 0..{vocab_size - 1} (vocab_size){'' if allow is None else f' or {allow}'}"
                         f", got {ids[bad][0]} at position {tuple(int(p) for p in np.argwhere(bad)[0])}")
    return ids.astype(np.int64)


def as_array(values, name):
    """np.asarray, with ragged nested lists as a ValueError naming the argument."""
    if isinstance(values, dict):     # e.g. model(tokenizer(text)): the whole BatchEncoding
        raise ValueError(f"{name} got a dict (keys {sorted(values)}); pass its arrays by name: "
                         f"model(**encoding) or {name}=encoding[{name!r}]")
    try:
        return np.asarray(values)
    except ValueError:
        raise ValueError(f"{name}: rows of different lengths; pad them to one length and pass "
                         "attention_mask (0 = padding)") from None


def embeddings(inputs_embeds, n_embd):
    x = as_array(inputs_embeds, "inputs_embeds")
    if not np.issubdtype(x.dtype, np.floating) or x.ndim != 3 or x.shape[2] != n_embd or x.shape[1] == 0:
        raise ValueError(f"inputs_embeds must be float [batch, seq, n_embd={n_embd}], got "
                         f"{x.dtype} {x.shape}")
    return x.astype(np.float32)


def attention_mask_2d(mask, b, s):
    """mask [b, s] of 0/1 covering past + new tokens -> bool, or None."""
    if mask is None:
        return None
    mask = as_array(mask, "attention_mask")
    if mask.shape != (b, s) and not (mask.ndim == 1 and b == 1 and mask.shape == (s,)):
        raise ValueError(f"attention_mask must have shape {(b, s)} (batch, past + new tokens), "
                         f"got {mask.shape}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    return mask.reshape(b, s).astype(bool)


def positions_from_mask(attention_mask):
    """Each token's position counts the real tokens before it (cumsum(mask) - 1, never below 0),
    so left padding does not shift a row: [b, s] 0/1 -> [b, s]."""
    return np.maximum(np.cumsum(attention_mask, axis=-1) - 1, 0)


def position_ids_for(position_ids, attention_mask, b, t, n_past, n_positions):
    """[b, t] positions. Default: count the real tokens (cumsum(mask) - 1, so left padding works;
    transformers' forward uses arange instead, which equals it for unpadded and right-padded rows)."""
    if position_ids is None:
        if attention_mask is None:
            return np.broadcast_to(np.arange(n_past, n_past + t), (b, t))
        return positions_from_mask(attention_mask)[:, n_past:]
    position_ids = as_array(position_ids, "position_ids")
    if not np.issubdtype(position_ids.dtype, np.integer) or position_ids.shape not in ((t,), (1, t), (b, t)):
        raise ValueError(f"position_ids must be integers of shape {(b, t)}, got {position_ids.dtype} "
                         f"{position_ids.shape}")
    if ((position_ids < 0) | (position_ids >= n_positions)).any():
        raise ValueError(f"position_ids must be in 0..{n_positions - 1} (n_positions)")
    return np.broadcast_to(position_ids, (b, t))


def head_masks(head_mask, n_layer, n_head):
    """None, [n_head] (every layer) or [n_layer, n_head] -> a list of n_layer ([n_head] or None)."""
    if head_mask is None:
        return [None] * n_layer
    head_mask = as_array(head_mask, "head_mask")
    if not (np.issubdtype(head_mask.dtype, np.number) or head_mask.dtype == bool):
        raise ValueError(f"head_mask must hold numbers (1 keeps a head, 0 masks it), got dtype {head_mask.dtype}")
    head_mask = head_mask.astype(np.float32)
    if head_mask.shape == (n_head,):
        return [head_mask] * n_layer
    if head_mask.shape == (n_layer, n_head):
        return list(head_mask)
    raise ValueError(f"head_mask must have shape ({n_head},) or ({n_layer}, {n_head}), got {head_mask.shape}")
