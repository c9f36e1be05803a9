"""Text generation: the logits processors, the sampling rule, and the decode loop over the KV cache.

One step of generation turns the last position's logits into one new token per row:

    scores = logits[:, -1, :]                       # [rows, vocab] float32
    scores = apply_repetition_penalty(scores, ...)  # \\ always (also greedy), in this order,
    scores = apply_min_new_tokens(scores, ...)      # /  like transformers' "processors"
    scores = apply_temperature(scores, t)           # \\
    scores = apply_top_k(scores, k)                 #  > only when sampling, like transformers' "warpers"
    scores = apply_top_p(scores, p)                 # /
    token  = argmax(scores)  or  sample_tokens(scores, rng)

Each processor is a small function with transformers' exact rule (the docstrings say which
transformers class it mirrors). Removed tokens get the score -inf, so they get probability 0.

The decode loop (`iter_generate`) runs the prompt through the model once (prefill), then feeds one
token per step through the KV cache. `generate` collects the ids like transformers' `generate`;
`stream` yields text pieces; both sit on `iter_generate`.

Sampling procedure (portable: same seed, same tokens on every machine up to float rounding of the
logits themselves): each step draws `u = rng.random(rows)` from `numpy.random.Generator(PCG64(seed))`,
one uniform per row in row order (finished rows draw too, so a row's draws do not depend on when
other rows stop). For each row, take the tokens whose processed score is finite, in vocab order;
p = their softmax in float64; the token is the first one whose cumulative sum of p exceeds
`u * sum(p)`.
"""

import codecs
import time
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------
# Logits processors: scores [rows, vocab] float32 -> new scores [rows, vocab] (never in place)
# ----------------------------------------------------------------------------------------------


def apply_repetition_penalty(scores, input_ids, penalty, attention_mask=None):
    """Penalise every token id already present in the row (CTRL paper; transformers'
    RepetitionPenaltyLogitsProcessor): a score s < 0 becomes s * penalty, otherwise s / penalty.
    Each id is penalised once, however often it occurs.

    input_ids [rows, seq] is the whole row so far (prompt + generated). Positions where
    attention_mask is 0 (left padding) do not count: so a padded row behaves as it does alone.
    (transformers counts the pad ids too, which only matters in padded batches.)
    """
    if penalty == 1.0:
        return scores
    input_ids = np.asarray(input_ids)
    if attention_mask is not None:
        attention_mask = np.asarray(attention_mask)
    out = scores.copy()
    for row in range(scores.shape[0]):
        ids = input_ids[row] if attention_mask is None else input_ids[row][attention_mask[row] != 0]
        seen = np.unique(ids[(ids >= 0) & (ids < scores.shape[1])])   # ids past the vocab cannot be generated
        values = out[row, seen]
        out[row, seen] = np.where(values < 0, values * penalty, values / penalty)
    return out


def apply_min_new_tokens(scores, n_new_tokens, min_new_tokens, eos_token_ids):
    """While fewer than min_new_tokens tokens were generated, EOS may not be chosen: its score
    becomes -inf (transformers' MinNewTokensLengthLogitsProcessor; the prompt does not count)."""
    if n_new_tokens >= min_new_tokens or not eos_token_ids:
        return scores
    scores = scores.copy()
    # ids past the vocabulary cannot be generated anyway (transformers' isin skips them too)
    scores[:, [i for i in eos_token_ids if 0 <= i < scores.shape[1]]] = -np.inf
    return scores


def apply_temperature(scores, temperature):
    """Divide the scores by the temperature (transformers' TemperatureLogitsWarper).
    temperature < 1 sharpens the distribution, > 1 flattens it; 0 means greedy and is handled
    by the caller (here it would divide by zero)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy decoding), got {temperature}")
    if temperature == 1.0:
        return scores
    return (scores / np.float32(temperature)).astype(scores.dtype)


def apply_top_k(scores, top_k, min_tokens_to_keep=1):
    """Keep the top_k highest scores of each row (transformers' TopKLogitsWarper).

    Rule: remove every token whose score is strictly below the k-th highest score, so tokens
    tied with the k-th are all kept (the row may keep more than k). top_k None or 0 = off.
    """
    if not top_k:
        return scores
    top_k = min(max(int(top_k), min_tokens_to_keep), scores.shape[-1])
    kth_highest = -np.partition(-scores, top_k - 1, axis=-1)[:, top_k - 1 : top_k]   # [rows, 1]
    return np.where(scores < kth_highest, -np.inf, scores).astype(scores.dtype)


def apply_top_p(scores, top_p, min_tokens_to_keep=1):
    """Nucleus filtering (transformers' TopPLogitsWarper): keep the smallest set of most likely
    tokens whose probabilities add up to at least top_p.

    transformers' rule: sort the scores ascending, take the cumulative softmax, and remove every
    token whose cumulative probability is <= 1 - top_p; the min_tokens_to_keep most likely tokens
    always stay. The same rule counted from the top: a token stays when the probability of the
    tokens ranked above it is < top_p, so the token that crosses top_p stays. (OpenAI's gpt-2 code
    keeps tokens while the cumulative sum is <= p: it drops that token.) top_p = 1 keeps everything.

    Counting from the top lets us sort only the few most likely tokens instead of all 50257:
    take the top 64 candidates, 8x more until their mass reaches top_p (then every token outside
    them has at least that mass above it). Probabilities in float32 (as transformers), sums in float64.
    """
    if top_p >= 1.0:
        return scores
    rows, vocab = scores.shape
    probs = softmax(scores)                                  # [rows, vocab] float32, as transformers
    out = np.full_like(scores, -np.inf)
    for row in range(rows):
        n_candidates = min(64, vocab)
        while True:
            if n_candidates * 8 < vocab:
                candidates = np.argpartition(-scores[row], n_candidates - 1)[:n_candidates]
            else:
                candidates = np.arange(vocab)
            # most likely first (numpy's default sort: among exactly equal scores the order is
            # arbitrary but fixed, as with transformers' torch.sort)
            candidates = candidates[np.argsort(-scores[row, candidates])]
            p = probs[row, candidates].astype(np.float64)
            mass_above = np.cumsum(p) - p                                                  # [n_candidates]
            if candidates.size == vocab or mass_above[-1] + p[-1] >= top_p:
                break
            n_candidates *= 8
        n_keep = max(int(np.sum(mass_above < top_p)), min_tokens_to_keep)
        keep = candidates[:n_keep]
        out[row, keep] = scores[row, keep]
    return out


def softmax(scores):
    """Softmax over the last axis, with the max subtracted; -inf scores get probability 0."""
    shifted = scores - np.max(scores, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


def process_logits(scores, input_ids, *, attention_mask=None, n_new_tokens=0, do_sample=False,
                   temperature=1.0, top_k=None, top_p=1.0, repetition_penalty=1.0,
                   min_new_tokens=0, eos_token_ids=()):
    """All processors in transformers' order. Warpers (temperature, top-k, top-p) only when
    sampling. scores [rows, vocab] -> [rows, vocab] float32."""
    scores = apply_repetition_penalty(scores, input_ids, repetition_penalty, attention_mask)
    scores = apply_min_new_tokens(scores, n_new_tokens, min_new_tokens, eos_token_ids)
    if do_sample:
        scores = apply_temperature(scores, temperature)
        scores = apply_top_k(scores, top_k)
        scores = apply_top_p(scores, top_p)
    return scores


def sample_tokens(scores, rng):
    """Draw one token per row from softmax(scores) with the documented procedure (module doc).
    scores [rows, vocab] -> token ids [rows] int64."""
    u = rng.random(scores.shape[0])                                       # [rows], in [0, 1)
    tokens = np.empty(scores.shape[0], dtype=np.int64)
    for row in range(scores.shape[0]):
        finite = np.isfinite(scores[row])
        kept = np.arange(finite.size) if finite.all() else np.flatnonzero(finite)   # in vocab order
        if kept.size == 0:
            raise ValueError(f"row {row}: every token was filtered out (all scores are -inf)")
        cumulative = np.cumsum(softmax(scores[row, kept].astype(np.float64)))
        index = np.searchsorted(cumulative, u[row] * cumulative[-1], side="right")
        tokens[row] = kept[min(index, kept.size - 1)]    # u * total can round up to total
    return tokens


def make_rng(seed):
    """seed None -> fresh unseeded generator; int -> Generator(PCG64(seed)); a Generator is used as is."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.Generator(np.random.PCG64())
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be None, an integer >= 0 or a numpy Generator, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


# ----------------------------------------------------------------------------------------------
# Streaming text: UTF-8-safe incremental decoding with stop strings
# ----------------------------------------------------------------------------------------------


class StreamDecoder:
    """Turns one row's tokens into text pieces, as they come.

    - A token can end in the middle of a UTF-8 character (an emoji is often 2-3 tokens): its
      bytes wait until the character is complete, so no piece ever holds half a character.
      Bytes that can never form a character become U+FFFD, as in `tokenizer.decode`.
    - Stop strings: the text ends just *before* the first stop string (the stop string itself is
      not emitted). A stop string can straddle tokens, so any tail of the text that could be the
      start of a stop string is held back until the next token decides.

    `push(token_id) -> str` returns the text that is now safe to show (maybe ""); `finish() -> str`
    returns what was held back. When no stop string is hit, the pieces join to exactly
    `tokenizer.decode(ids)`. `stopped` says whether a stop string was found.
    """

    def __init__(self, token_bytes, stop=()):
        self._token_bytes = token_bytes                       # id -> bytes of that token
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = tuple(stop)
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        self._text = ""          # all text decoded so far
        self._emitted = 0        # how much of _text was handed out
        self.stopped = False
        self.finished = False

    @property
    def text(self):
        """The text handed out so far."""
        return self._text[: self._emitted]

    def push(self, token_id):
        if self.stopped or self.finished:
            return ""
        self._text += self._utf8.decode(self._token_bytes(int(token_id)))
        return self._release(final=False)

    def finish(self):
        if self.stopped or self.finished:
            return ""
        self.finished = True
        self._text += self._utf8.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final):
        pending = self._text[self._emitted:]
        hits = [i for i in (pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            piece = pending[: min(hits)]
        else:
            hold = 0 if final else self._stop_prefix_length(pending)
            piece = pending[: len(pending) - hold]
        self._emitted += len(piece)
        return piece

    def _stop_prefix_length(self, text):
        """Length of the longest tail of `text` that is the beginning of some stop string."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest


def token_bytes_function(tokenizer):
    """id -> the raw bytes of that token, from whatever the tokenizer offers."""
    if hasattr(tokenizer, "decode_bytes"):
        return lambda token_id: tokenizer.decode_bytes([token_id])
    if hasattr(tokenizer, "byte_decoder") and hasattr(tokenizer, "decoder"):
        byte_decoder, decoder = tokenizer.byte_decoder, tokenizer.decoder

        def token_bytes(token_id):
            piece = decoder.get(token_id)
            if piece is None or any(ch not in byte_decoder for ch in piece):
                return tokenizer.decode([token_id]).encode("utf-8")
            return bytes(byte_decoder[ch] for ch in piece)
        return token_bytes
    return lambda token_id: tokenizer.decode([token_id]).encode("utf-8")


# ----------------------------------------------------------------------------------------------
# The decode loop
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationStep:
    """What one decode step produced (one entry per row)."""
    tokens: np.ndarray          # [rows] int64, the new token (pad_token_id for rows already finished)
    texts: list                 # [rows] str, new text safe to show (None without a tokenizer)
    finished: np.ndarray        # [rows] bool, rows that are done after this step
    seconds: float              # wall time of this step (the first step includes the prefill)
    n_context: int              # tokens fed to the model in this step (the prompt length at prefill)


def _as_2d_int(name, array):
    if isinstance(array, dict):     # e.g. generate(model, tokenizer(text)): the whole BatchEncoding
        raise ValueError(f"{name} got a dict (keys {sorted(array)}); pass its arrays by name: "
                         f"model.generate(**encoding) or {name}=encoding[{name!r}]")
    try:
        array = np.asarray(array)
    except ValueError:
        raise ValueError(f"{name}: rows of different lengths; pad them on the left and pass "
                         "attention_mask (0 = padding)") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, seq], got shape {array.shape}")
    if array.size and (array.dtype == bool or not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_arguments(max_new_tokens, min_new_tokens, temperature, top_k, top_p,
                     repetition_penalty, num_return_sequences, do_sample):
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(min_new_tokens, (int, np.integer)) or min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")
    if not _is_number(temperature) or not temperature >= 0:     # `not >=`: NaN fails too
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 0):
        raise ValueError(f"top_k must be an integer >= 0 (0 or None = off), got {top_k!r}")
    if not _is_number(top_p) or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p!r}")
    if not _is_number(repetition_penalty) or not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty!r}")
    if not isinstance(num_return_sequences, (int, np.integer)) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    if num_return_sequences > 1 and not do_sample:
        raise ValueError("num_return_sequences > 1 needs do_sample=True (greedy rows would be identical)")


def _is_number(value):
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _token_id_list(name, value):
    """An int or a list of ints, each >= 0 -> list of ints (a float such as 2.7 is not an id)."""
    values = np.atleast_1d(np.asarray(value))
    if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)) or (values < 0).any():
        raise ValueError(f"{name} must be a token id >= 0 or a list of them, got {value!r}")
    return [int(v) for v in values]


def _positions(attention_mask):
    """Absolute positions from the mask, so left padding does not shift them: cumsum - 1, >= 0."""
    return np.maximum(np.cumsum(attention_mask, axis=-1) - 1, 0)   # [rows, seq]


def iter_generate(model, input_ids, attention_mask=None, max_new_tokens=20, min_new_tokens=0,
                  do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0,
                  eos_token_id=50256, pad_token_id=None, stop=None, seed=None,
                  num_return_sequences=1, tokenizer=None, crop=False):
    """The decode loop, one `GenerationStep` per new token (see `generate` for the arguments).
    Stops early when every row has finished (EOS or a stop string)."""
    input_ids = _as_2d_int("input_ids", input_ids)
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give at least one token (e.g. <|endoftext|> = 50256)")
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    attention_mask = _as_2d_int("attention_mask", attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {attention_mask.shape}, input_ids {input_ids.shape}: "
                         "they must match")
    if not np.isin(attention_mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    if not np.all(attention_mask[:, -1] == 1) or np.any(np.diff(attention_mask, axis=-1) < 0):
        raise ValueError("attention_mask: generation needs left padding (zeros first, then ones, "
                         "last column all ones); pad prompts on the left")
    greedy = not do_sample or temperature == 0
    _check_arguments(max_new_tokens, min_new_tokens, temperature, top_k, top_p,
                     repetition_penalty, num_return_sequences, do_sample)
    vocab_size = model.config.vocab_size
    if input_ids.max() >= vocab_size or input_ids.min() < 0:
        raise ValueError(f"input_ids holds ids outside [0, {vocab_size}) (vocab_size of the model)")
    eos_token_ids = [] if eos_token_id is None else _token_id_list("eos_token_id", eos_token_id)
    if pad_token_id is None:
        pad_token_id = eos_token_ids[0] if eos_token_ids else 0   # transformers does the same
    elif _token_id_list("pad_token_id", pad_token_id)[0] >= vocab_size or np.ndim(pad_token_id):
        # finished rows are fed this id: past the vocabulary, the model would fail mid-generation
        raise ValueError(f"pad_token_id must be one id in [0, {vocab_size}) (vocab_size of the model), "
                         f"got {pad_token_id!r}")
    n_positions = model.config.n_positions
    if not crop and input_ids.shape[1] + max_new_tokens > n_positions:
        raise ValueError(
            f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) > n_positions "
            f"({n_positions}), the model's context: shorten the prompt or max_new_tokens, or pass "
            f"crop=True (--crop) to keep going on the last {n_positions} tokens")
    stop = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
    stop = list(stop)
    if stop and tokenizer is None:
        raise ValueError("stop strings need tokenizer= to turn tokens into text")

    # one row per returned sequence: [batch, seq] -> [batch * num_return_sequences, seq]
    ids = np.repeat(input_ids, num_return_sequences, axis=0)
    mask = np.repeat(attention_mask, num_return_sequences, axis=0)
    rows = ids.shape[0]
    rng = None if greedy else make_rng(seed)
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                    repetition_penalty=repetition_penalty, min_new_tokens=min_new_tokens)
    decoders = None
    if tokenizer is not None:
        token_bytes = token_bytes_function(tokenizer)
        decoders = [StreamDecoder(token_bytes, stop) for _ in range(rows)]
    # Everything above runs at the call, so bad arguments fail at once; the loop below runs as
    # the caller asks for steps.
    return _decode_steps(model, ids, mask, max_new_tokens, greedy, rng, decoders, n_positions,
                         pad_token_id, eos_token_ids, settings)


def _decode_steps(model, ids, mask, max_new_tokens, greedy, rng, decoders, n_positions,
                  pad_token_id, eos_token_ids, settings):
    """The loop of `iter_generate`: prefill, then one token per step; yields GenerationStep."""
    rows = ids.shape[0]
    finished = np.zeros(rows, dtype=bool)
    cache = None
    for step in range(max_new_tokens):
        start = time.perf_counter()
        if cache is not None and ids.shape[1] <= n_positions:
            # decode: only the newest token goes in; the cache holds the keys/values of the rest
            fed_ids, fed_mask = ids[:, -1:], mask
            fed_positions = _positions(mask)[:, -1:]
        else:
            # prefill (or, past the context with crop=True, a full pass over the last n_positions tokens)
            fed_ids, fed_mask = ids[:, -n_positions:], mask[:, -n_positions:]
            fed_positions = _positions(fed_mask)
            cache = None
        # logits_to_keep=1: only the last position's logits are needed (saves a
        # [rows, prompt, vocab] matmul at prefill)
        output = model(input_ids=fed_ids, attention_mask=fed_mask, position_ids=fed_positions,
                       past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = output.past_key_values
        scores = np.array(output.logits[:, -1, :], dtype=np.float32)      # [rows, vocab], a copy
        scores = process_logits(scores, ids, attention_mask=mask, n_new_tokens=step,
                                do_sample=not greedy, eos_token_ids=eos_token_ids, **settings)
        tokens = np.argmax(scores, axis=-1) if greedy else sample_tokens(scores, rng)   # [rows]
        tokens = np.where(finished, pad_token_id, tokens).astype(np.int64)
        ids = np.concatenate([ids, tokens[:, None]], axis=1)               # [rows, seq + 1]
        mask = np.concatenate([mask, np.ones((rows, 1), dtype=mask.dtype)], axis=1)

        now_finished = finished | np.isin(tokens, eos_token_ids)
        last_step = step == max_new_tokens - 1
        texts = None
        if decoders is not None:
            texts = []
            for row, decoder in enumerate(decoders):
                piece = ""
                if not finished[row] and not np.isin(tokens[row], eos_token_ids):  # EOS is not text
                    piece = decoder.push(tokens[row])
                    now_finished[row] |= decoder.stopped
                if now_finished[row] or last_step:
                    piece += decoder.finish()
                texts.append(piece)
        finished = now_finished
        yield GenerationStep(tokens=tokens, texts=texts, finished=finished.copy(),
                             seconds=time.perf_counter() - start, n_context=fed_ids.shape[1])
        if finished.all():
            break


def generate(model, input_ids, attention_mask=None, max_new_tokens=20, min_new_tokens=0,
             do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0,
             eos_token_id=50256, pad_token_id=None, stop=None, seed=None, num_return_sequences=1,
             streamer=None, tokenizer=None, crop=False):
    """Continue each prompt; returns the ids, prompt included: [batch * num_return_sequences,
    prompt + new] int64, like transformers' `model.generate`.

    input_ids [batch, seq] (or one list of ids); attention_mask marks real tokens (1) and left
    padding (0): a padded row generates exactly what it generates alone. do_sample=False is greedy
    (argmax); do_sample=True samples after temperature, top_k, top_p (transformers' defaults and
    rules: top_k=50 unless set, None or 0 turns it off; temperature=0 means greedy).
    repetition_penalty and min_new_tokens apply in both modes.
    A row ends at an eos_token_id (int or list; None = never) or, given tokenizer=, at a stop
    string (the row keeps the token that completed it); finished rows are padded with pad_token_id
    (default: the first eos id). The result is shorter than prompt + max_new_tokens when every row
    finished early.

    seed: None, an int (numpy PCG64) or a numpy Generator. streamer: a callable, called with each
    new text piece of the single row (needs tokenizer=; pieces never split a UTF-8 character and
    stop before a stop string). Prompt + max_new_tokens above the model's n_positions is an error;
    crop=True instead keeps going on the last n_positions tokens (each step past the context
    re-runs the model over that window, without a cache, as nanoGPT does).
    """
    input_ids = _as_2d_int("input_ids", input_ids)
    if streamer is not None:
        if tokenizer is None:
            raise ValueError("streamer needs tokenizer= to turn tokens into text")
        if input_ids.shape[0] * num_return_sequences != 1:
            raise ValueError("streamer works with a single row (batch 1, num_return_sequences=1)")
    steps = iter_generate(
        model, input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
        top_p=top_p, repetition_penalty=repetition_penalty, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, stop=stop, seed=seed, num_return_sequences=num_return_sequences,
        tokenizer=tokenizer, crop=crop)
    new_tokens = []
    for step in steps:
        new_tokens.append(step.tokens)
        if streamer is not None and step.texts[0]:
            streamer(step.texts[0])
    prompt = np.repeat(input_ids, num_return_sequences, axis=0)
    if not new_tokens:
        return prompt
    return np.concatenate([prompt, np.stack(new_tokens, axis=1)], axis=1)


def stream(model, tokenizer, prompt, *, allowed_special=None, disallowed_special=(), **kwargs):
    """Yield the continuation of `prompt` (a string or a list of ids) as text pieces, as they are
    generated; takes the keyword arguments of `generate`. Pieces never split a UTF-8 character,
    the EOS token is not shown, and the text ends before a stop string. For token ids and timing
    per step, use `iter_generate`. A str prompt is encoded with `allowed_special` / `disallowed_special`
    (those of `tokenizer.encode`): allowed_special=() reads "<|endoftext|>" in it as plain text."""
    ids = (tokenizer.encode(prompt, allowed_special=allowed_special, disallowed_special=disallowed_special)
           if isinstance(prompt, str) else prompt)
    for step in iter_generate(model, ids, tokenizer=tokenizer, **kwargs):
        if step.texts[0]:
            yield step.texts[0]


class GenerationMixin:
    """``model.generate(...)`` for a model class: the loop above, with the model as its first argument.

    The model classes inherit this (as transformers' do), so this module never imports them: it
    only calls ``model(...)`` and reads ``model.config``.
    """

    def generate(self, input_ids, **kwargs):
        """Continue the prompts; see ``minigpt2.generate.generate`` for the arguments."""
        return generate(self, input_ids, **kwargs)
