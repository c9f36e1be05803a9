"""`tok(text, ...)`: one text or a batch, text pairs, pre-split words, truncation, padding, offsets.

    encode_call(tok, ["Hello", "Hi there"], padding=True, truncation=True, max_length=8)

The tokenizer encodes each text (`tok.encode`, or `tok.encode_with_offsets` when offsets are
asked for); this module shapes the rows the way transformers does and hands them to
`batch_encoding.pad_and_stack`.
"""

from minigpt2.tokenizer.batch_encoding import pad_and_stack

TRUNCATION_MODES = {False: None, None: None, "do_not_truncate": None, True: "longest_first",
                    "longest_first": "longest_first", "only_first": "only_first",
                    "only_second": "only_second"}


def encode_call(tok, text, text_pair=None, *, padding=False, truncation=False, max_length=None,
                pad_to_multiple_of=None, return_tensors=None, return_attention_mask=True,
                return_token_type_ids=False, return_offsets_mapping=False, is_split_into_words=False,
                allowed_special=None, disallowed_special=(), add_special_tokens=True):
    """`tok(text, ...)`: encode one text or a list of texts (and optional second texts), as transformers does.

    text_pair: a second text per text; its ids follow the first's (GPT-2 puts no token
        between them), and token_type_ids (with return_token_type_ids=True) are 0 / 1.
    is_split_into_words: each text is a list of words, each encoded on its own (with a space
        before it when add_prefix_space is set, as transformers does); a batch is a list of them.
    padding: False / "do_not_pad", True / "longest", or "max_length" (needs a pad_token).
    truncation: True / "longest_first", "only_first" or "only_second" cuts to max_length
        (default model_max_length, 1024), on `truncation_side`; "longest_first" shortens the
        longer text of a pair first, as transformers' tokenizers library does.
    return_tensors: None (lists) or "np" (int64 arrays [batch, seq]).
    allowed_special, disallowed_special: as in `GPT2Tokenizer.encode`.
    Returns a BatchEncoding (a dict) with input_ids, attention_mask and, if asked,
    token_type_ids and offset_mapping (offsets count within each text, or each word).
    """
    texts, pairs, single = batch_inputs(text, text_pair, is_split_into_words)
    check_positive_int(max_length, "max_length")
    check_positive_int(pad_to_multiple_of, "pad_to_multiple_of")
    if not isinstance(truncation, (bool, str, type(None))) or truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation must be False, True, 'longest_first', 'only_first', "
                         f"'only_second' or 'do_not_truncate', got {truncation!r}")
    specials = {"allowed_special": allowed_special, "disallowed_special": disallowed_special}
    tok.allowed_special_in("", **specials)   # bad settings fail here, also for an empty batch
    limit = max_length if max_length is not None else tok.model_max_length
    mode = TRUNCATION_MODES[truncation]
    id_rows, type_rows = [], []
    offset_rows = [] if return_offsets_mapping else None
    for first, second in zip(texts, pairs):
        # items: token ids, or (id, (start, end)) pairs when offsets are asked for
        first = encode_text(tok, first, specials, return_offsets_mapping)
        paired = second is not None
        second = encode_text(tok, second, specials, return_offsets_mapping) if paired else []
        if mode is not None:
            first, second = truncate_texts(first, second, limit, mode, paired, tok.truncation_side)
        items = first + second
        if return_offsets_mapping:
            id_rows.append([token_id for token_id, _ in items])
            offset_rows.append([span for _, span in items])
        else:
            id_rows.append(items)
        type_rows.append([0] * len(first) + [1] * len(second))
    return pad_and_stack(tok, id_rows, offset_rows, single=single, padding=padding,
                         max_length=max_length, pad_to_multiple_of=pad_to_multiple_of,
                         return_tensors=return_tensors, return_attention_mask=return_attention_mask,
                         type_rows=type_rows if return_token_type_ids else None)


def encode_text(tok, text, specials, with_offsets):
    """One text (a str, or a list of words) -> ids, or (id, span) pairs if with_offsets."""
    words = [text] if isinstance(text, str) else text
    items = []
    for word in words:                 # a pre-split word is encoded on its own, as in transformers
        items += tok.encode_with_offsets(word, **specials) if with_offsets else tok.encode(word, **specials)
    return items


def truncate_texts(first, second, limit, mode, paired, side):
    """Cut a text, or a pair of texts, to `limit` tokens together (transformers' strategies)."""
    excess = len(first) + len(second) - limit
    if excess <= 0:
        return first, second
    if mode == "only_second" and not paired:
        raise ValueError("truncation='only_second' needs a text_pair")
    if mode == "longest_first" and paired:
        # keep the shorter text whole if the longer one alone can make room; otherwise both
        # get half of the limit (the longer one the odd token)
        short, long = sorted((len(first), len(second)))
        keep_short, keep_long = short, max(short, limit - short)
        if keep_short + keep_long > limit:
            keep_short, keep_long = limit // 2, limit // 2 + limit % 2
        keep_first, keep_second = ((keep_short, keep_long) if len(first) <= len(second)
                                   else (keep_long, keep_short))
        return truncate(first, keep_first, side), truncate(second, keep_second, side)
    # one text is cut (a single text: always the first), the other kept whole
    cut_first = mode != "only_second"
    text, other = (first, second) if cut_first else (second, first)
    if paired and excess >= len(text):
        raise ValueError(f"truncation={mode!r} cannot fit max_length={limit}: the "
                         f"{'first' if cut_first else 'second'} text has {len(text)} tokens and "
                         f"the other {len(other)}; use truncation='longest_first' or a larger max_length")
    text = truncate(text, len(text) - excess, side)
    return (text, second) if cut_first else (first, text)


def truncate(items, max_length, side):
    """The first (side 'right') or last (side 'left') `max_length` items."""
    if max_length is None or len(items) <= max_length:
        return items
    if side == "left":
        return items[len(items) - max_length:]
    if side != "right":
        raise ValueError(f"truncation_side must be 'right' or 'left', got {side!r}")
    return items[:max_length]


def batch_inputs(text, text_pair, is_split_into_words):
    """__call__'s inputs as (texts, pairs, single): one entry per batch row, pairs None-filled."""
    def is_text(x):                      # one text: a str, or a list of words when pre-split
        if is_split_into_words:
            return isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x)
        return isinstance(x, str)

    what = ("a list of words (str) or a list of such lists (is_split_into_words=True)"
            if is_split_into_words else "a str or a list of str")
    single = is_text(text)
    if not single and not (isinstance(text, (list, tuple)) and all(is_text(t) for t in text)):
        raise ValueError(f"text must be {what}, got {describe(text, is_text)}")
    texts = [text] if single else list(text)
    if text_pair is None:
        return texts, [None] * len(texts), single
    if single and not is_text(text_pair):
        raise ValueError(f"text_pair must be one text of the same kind as text, "
                         f"got {describe(text_pair, is_text)}")
    if not single and not (isinstance(text_pair, (list, tuple)) and all(is_text(t) for t in text_pair)):
        raise ValueError(f"for a batch of texts, text_pair must be a list of the same length, "
                         f"got {describe(text_pair, is_text)}")
    pairs = [text_pair] if single else list(text_pair)
    if len(pairs) != len(texts):
        raise ValueError(f"text has {len(texts)} texts but text_pair has {len(pairs)}")
    return texts, pairs, single


def describe(value, is_text):
    """'int', or 'a list holding dict' (its first element that is not a text), for an error message."""
    if isinstance(value, (list, tuple)):
        odd = next((v for v in value if not is_text(v)), None)
        return f"a {type(value).__name__} holding {type(odd).__name__ if odd is not None else 'nothing'}"
    return type(value).__name__


def check_positive_int(value, name):
    """None, or an int >= 1 (a length): anything else is a ValueError naming the argument."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
