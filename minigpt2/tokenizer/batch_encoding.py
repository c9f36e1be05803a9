"""Turn encoded texts into a batch: truncate, pad (right or left), attention mask, NumPy arrays.

This is the part of `GPT2Tokenizer.__call__` that knows nothing about BPE: it receives, per text,
the token ids (and, if asked, their (start, end) character offsets) and builds what
transformers returns.
"""

PADDING_MODES = {False: None, None: None, "do_not_pad": None,
                 True: "longest", "longest": "longest", "max_length": "max_length"}


class BatchEncoding(dict):
    """A dict (input_ids, attention_mask, ...) whose keys also read as attributes: enc.input_ids."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def pad_and_stack(tokenizer, id_rows, offset_rows, *, single, padding, max_length, pad_to_multiple_of,
                  return_tensors, return_attention_mask, type_rows=None):
    """id_rows: a list of ids per text; offset_rows: a list of (start, end) per text, or None;
    type_rows: a list of token type ids (0 / 1) per text, or None. Padding gets type 0."""
    if not isinstance(padding, (bool, str, type(None))) or padding not in PADDING_MODES:   # a list is unhashable
        raise ValueError(f"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if return_tensors not in (None, "np"):
        raise ValueError(f"return_tensors must be None or 'np' (minigpt2 is NumPy only), got {return_tensors!r}")
    mode = PADDING_MODES[padding]
    if mode is not None and tokenizer.pad_token is None:
        raise ValueError("Asking to pad but the tokenizer has no pad_token (GPT-2 has none by "
                         "default). Set one, e.g. tokenizer.pad_token = tokenizer.eos_token, and "
                         "pass attention_mask to the model so the padding is ignored.")
    if tokenizer.padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {tokenizer.padding_side!r}")

    target = None                                   # the padded length, if padding
    if mode == "longest":
        target = max(map(len, id_rows), default=0)
    elif mode == "max_length":
        target = max_length if max_length is not None else tokenizer.model_max_length
    if target is not None and pad_to_multiple_of:
        target = -(-target // pad_to_multiple_of) * pad_to_multiple_of   # round up

    input_ids, attention_mask, offsets, types = [], [], [], []
    for row, ids in enumerate(id_rows):
        n_pad = max(0, target - len(ids)) if target is not None else 0
        mask = [1] * len(ids)
        spans = offset_rows[row] if offset_rows is not None else []
        kinds = type_rows[row] if type_rows is not None else []
        if n_pad:
            pad_ids, pad_mask, pad_spans = [tokenizer.pad_token_id] * n_pad, [0] * n_pad, [(0, 0)] * n_pad
            pad_kinds = [0] * n_pad if type_rows is not None else []
            if tokenizer.padding_side == "right":
                ids, mask, spans, kinds = ids + pad_ids, mask + pad_mask, spans + pad_spans, kinds + pad_kinds
            else:
                ids, mask, spans, kinds = pad_ids + ids, pad_mask + mask, pad_spans + spans, pad_kinds + kinds
        input_ids.append(ids)
        attention_mask.append(mask)
        offsets.append(spans)
        types.append(kinds)

    encoding = BatchEncoding(input_ids=input_ids)
    if type_rows is not None:
        encoding["token_type_ids"] = types
    if return_attention_mask:
        encoding["attention_mask"] = attention_mask
    if offset_rows is not None:
        encoding["offset_mapping"] = offsets

    if return_tensors == "np":
        import numpy as np   # here, so that importing the tokenizer does not import NumPy
        lengths = {len(ids) for ids in input_ids}
        if len(lengths) > 1:
            raise ValueError(f"the texts encode to different lengths {sorted(lengths)}: pass "
                             "padding=True (and set a pad_token) to get one array")
        n_tokens = lengths.pop() if lengths else 0
        for key, values in encoding.items():
            shape = (len(values), n_tokens, 2) if key == "offset_mapping" else (len(values), n_tokens)
            encoding[key] = np.array(values, dtype=np.int64).reshape(shape)   # [batch, seq(, 2)]
    elif single:
        for key in encoding:
            encoding[key] = encoding[key][0]
    return encoding
