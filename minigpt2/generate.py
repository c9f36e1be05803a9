"""Text generation: the decode loop over the KV cache, and `generate` as transformers has it.

One step turns the last position's logits into one new token per row:

    scores = logits[:, -1, :]                          # [rows, vocab] float32
    scores = process_logits(scores, ids, config, ...)  # processors.py, in transformers' order
    token  = argmax(scores)  or  sample_tokens(scores, rng)

The decode loop (`iter_generate`) runs the prompt through the model once (prefill), then feeds one
token per step through the KV cache. `generate` collects the ids like transformers' `generate`
(with num_beams > 1 it runs beam_search.py instead); `stream` yields text pieces.

The settings are a GenerationConfig (generation_config.py: transformers' names and defaults,
checked once at the call by `resolve_config`), so the loops below do not check anything.
"""

import codecs
import time
from dataclasses import dataclass

import numpy as np

from minigpt2.beam_search import beam_search
from minigpt2.generation_config import check_prompt, resolve_config
from minigpt2.inputs import positions_from_mask
from minigpt2.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from minigpt2.processors import check_not_nan, make_rng, process_logits, sample_tokens

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
    scores: np.ndarray = None   # [rows, vocab] processed scores (config.output_scores)
    logits: np.ndarray = None   # [rows, vocab] raw logits (config.output_logits)


def prepare(model, input_ids, attention_mask, generation_config, settings, stop, tokenizer, crop):
    """The one checker of a generate call: -> (ids, mask, config, stop list), all checked."""
    ids, mask = check_prompt(input_ids, attention_mask, model.config.vocab_size)
    config = resolve_config(model, ids.shape[1], generation_config, **settings)
    n_positions = model.config.n_positions
    if (not crop or config.num_beams > 1) and config.max_length > n_positions:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({config.max_new_tokens}) > n_positions "
            f"({n_positions}), the model's context: shorten the prompt or max_new_tokens, or pass "
            f"crop=True (--crop; not with beams) to keep going on the last {n_positions} tokens")
    stop = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
    if not all(stop):
        raise ValueError("stop strings must be non-empty")
    if stop and tokenizer is None:
        raise ValueError("stop strings need tokenizer= to turn tokens into text")
    if stop and config.num_beams > 1:
        raise ValueError("stop strings work without beams only: pass num_beams=1, or no stop")
    return ids, mask, config, list(stop)


def iter_generate(model, input_ids, attention_mask=None, generation_config=None, stop=None, seed=None,
                  tokenizer=None, crop=False, stop_strings=None, **settings):
    """The decode loop, one `GenerationStep` per new token (see `generate` for the arguments).
    Stops early when every row has finished (EOS or a stop string). Not for beam search, whose
    beams are only known at the end."""
    # prepare runs at the call, so bad arguments fail at once; the loop runs as steps are asked for
    ids, mask, config, stop = prepare(model, input_ids, attention_mask, generation_config, settings,
                                      stop or stop_strings, tokenizer, crop)
    if config.num_beams > 1:
        raise ValueError("iter_generate and stream give one token per step, which beam search cannot: "
                         "use generate(..., num_beams=k)")
    return start_decoding(model, ids, mask, config, seed, tokenizer, stop)


def start_decoding(model, ids, mask, config, seed, tokenizer, stop):
    """The loop over checked arguments (a generator: nothing runs until a step is asked for)."""
    # one row per returned sequence: [batch, seq] -> [batch * num_return_sequences, seq]
    ids = np.repeat(ids, config.num_return_sequences, axis=0)
    mask = np.repeat(mask, config.num_return_sequences, axis=0)
    rng = make_rng(seed) if config.do_sample else None
    decoders = None
    if tokenizer is not None:
        token_bytes = token_bytes_function(tokenizer)
        decoders = [StreamDecoder(token_bytes, stop) for _ in range(ids.shape[0])]
    return decode_steps(model, ids, mask, config, rng, decoders)


def decode_steps(model, ids, mask, config, rng, decoders):
    """The loop of `iter_generate`: prefill, then one token per step; yields GenerationStep."""
    rows, prompt_length = ids.shape
    n_positions, eos = model.config.n_positions, config.eos_token_ids
    finished = np.zeros(rows, dtype=bool)
    cache = None
    for step in range(config.max_new_tokens):
        start = time.perf_counter()
        if cache is not None and ids.shape[1] <= n_positions:
            # decode: only the newest token goes in; the cache holds the keys/values of the rest
            fed_ids, fed_mask, fed_positions = ids[:, -1:], mask, positions_from_mask(mask)[:, -1:]
        else:
            # prefill (or, past the context with crop=True, a full pass over the last n_positions tokens)
            fed_ids, fed_mask = ids[:, -n_positions:], mask[:, -n_positions:]
            fed_positions = positions_from_mask(fed_mask)
            cache = None
        # logits_to_keep=1: only the last position's logits are needed
        output = model(input_ids=fed_ids, attention_mask=fed_mask, position_ids=fed_positions,
                       past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = output.past_key_values
        logits = np.array(output.logits[:, -1, :], dtype=np.float32)      # [rows, vocab], a copy
        check_not_nan(logits)
        scores = process_logits(logits, ids, config, step, mask)
        tokens = sample_tokens(scores, rng) if config.do_sample else np.argmax(scores, axis=-1)   # [rows]
        tokens = np.where(finished, config.pad_token_id, tokens).astype(np.int64)
        ids = np.concatenate([ids, tokens[:, None]], axis=1)               # [rows, seq + 1]
        mask = np.concatenate([mask, np.ones((rows, 1), dtype=mask.dtype)], axis=1)

        now_finished = finished | np.isin(tokens, eos)
        last_step = step == config.max_new_tokens - 1
        texts = None
        if decoders is not None:
            texts = []
            for row, decoder in enumerate(decoders):
                piece = ""
                if not finished[row] and not np.isin(tokens[row], eos):    # EOS is not text
                    piece = decoder.push(tokens[row])
                    now_finished[row] |= decoder.stopped
                if now_finished[row] or last_step:
                    piece += decoder.finish()
                texts.append(piece)
        finished = now_finished
        yield GenerationStep(tokens=tokens, texts=texts, finished=finished.copy(),
                             seconds=time.perf_counter() - start, n_context=fed_ids.shape[1],
                             scores=scores if config.output_scores else None,
                             logits=logits if config.output_logits else None)
        if finished.all():
            break


def generate(model, input_ids, attention_mask=None, generation_config=None, streamer=None, tokenizer=None,
             stop=None, seed=None, crop=False, stop_strings=None, **settings):
    """Continue each prompt; returns the ids, prompt included: [batch * num_return_sequences,
    prompt + new] int64, like transformers' `model.generate` (or, with return_dict_in_generate=True,
    its output dataclass with sequences, scores, logits, and for beams sequences_scores, beam_indices).

    input_ids [batch, seq] (or one list of ids); attention_mask marks real tokens (1) and left
    padding (0): a padded row generates exactly what it generates alone.
    settings: transformers' GenerationConfig names and defaults (generation_config.py), over the
    model's generation_config.json: max_new_tokens (default 20) or max_length, do_sample,
    temperature (0 = greedy), top_k (50; None or 0 = off), top_p, min_p, typical_p,
    epsilon_cutoff, eta_cutoff, repetition_penalty, no_repeat_ngram_size, bad_words_ids,
    sequence_bias, suppress_tokens, begin_suppress_tokens, forced_bos_token_id,
    forced_eos_token_id, exponential_decay_length_penalty, renormalize_logits, min_new_tokens,
    min_length, num_beams, length_penalty, early_stopping, num_return_sequences, eos_token_id
    (int or list; None = never), pad_token_id (default: the first eos id), output_scores,
    output_logits, return_dict_in_generate.
    A row ends at an EOS or, given tokenizer=, at a stop string (stop= or stop_strings=; the row
    keeps the token that completed it); finished rows are padded with pad_token_id.

    seed: None, an int (numpy PCG64) or a numpy Generator (processors.py documents the draws).
    streamer: a callable, called with each new text piece of the single row (needs tokenizer=).
    crop=True keeps going past n_positions on the last n_positions tokens (no cache there).
    """
    ids, mask, config, stop = prepare(model, input_ids, attention_mask, generation_config, settings,
                                      stop or stop_strings, tokenizer, crop)
    if config.num_beams > 1:
        if streamer is not None:
            raise ValueError("streamer needs num_beams=1 (beam search knows its text only at the end)")
        result = beam_search(model, ids, mask, config, make_rng(seed) if config.do_sample else None)
        if not config.return_dict_in_generate:
            return result.sequences
        return GenerateBeamDecoderOnlyOutput(
            sequences=result.sequences, sequences_scores=result.sequences_scores if config.output_scores else None,
            scores=result.scores or None, logits=result.logits or None, beam_indices=result.beam_indices)
    if streamer is not None:
        if tokenizer is None:
            raise ValueError("streamer needs tokenizer= to turn tokens into text")
        if ids.shape[0] * config.num_return_sequences != 1:
            raise ValueError("streamer works with a single row (batch 1, num_return_sequences=1)")
    steps = list_steps(start_decoding(model, ids, mask, config, seed, tokenizer, stop), streamer)
    prompt = np.repeat(ids, config.num_return_sequences, axis=0)
    sequences = np.concatenate([prompt] + [step.tokens[:, None] for step in steps], axis=1)
    if not config.return_dict_in_generate:
        return sequences
    return GenerateDecoderOnlyOutput(
        sequences=sequences, scores=tuple(s.scores for s in steps) if config.output_scores else None,
        logits=tuple(s.logits for s in steps) if config.output_logits else None)


def list_steps(steps, streamer):
    """Run the steps, handing each new text piece of row 0 to the streamer."""
    done = []
    for step in steps:
        done.append(step)
        if streamer is not None and step.texts[0]:
            streamer(step.texts[0])
    return done


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
    only calls ``model(...)`` and reads ``model.config`` (and ``model.generation_config``, if set).
    """

    def generate(self, input_ids, **kwargs):
        """Continue the prompts; see ``minigpt2.generate.generate`` for the arguments."""
        return generate(self, input_ids, **kwargs)
