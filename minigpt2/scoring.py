"""Scoring a text: the log-probability of each token given the ones before it, and perplexity.

    result = score(model, tokenizer.encode(text))
    result.logprobs      # [n - 1] float64: log p(token i | tokens before it), i = 1 .. n-1
    result.perplexity    # exp(mean negative log-likelihood) = exp(transformers' loss)

The first token has nothing before it, so it is not scored (transformers' `labels=input_ids`
loss does the same; put 50256 <|endoftext|> in front of the ids to score the first token too).

Texts longer than the context (n_positions tokens) are scored with a sliding window, the method
of transformers' perplexity guide: windows of `max_length` tokens start every `stride` tokens, and
each window scores only the tokens the previous window did not reach, so every token after the
first is scored once, with at least `max_length - stride` tokens of context (except near the
start). With stride == max_length (no overlap) each later window's first token has no context in
its window and is not scored, as in the guide (`Score.positions` says which were). Unlike the
guide's loop, which weights every window's mean loss by `trg_len - 1` tokens, we average over the
exact tokens scored, so the result is the true mean over the text; the two agree when windows do
not overlap (stride == max_length) or the text fits one window.
"""

from dataclasses import dataclass

import numpy as np

from minigpt2 import ops
from minigpt2.inputs import is_int


@dataclass
class Score:
    token_ids: np.ndarray     # [n] int64, the ids of the text
    positions: np.ndarray     # [m] int64, the positions scored (1 .. n-1; m = n-1 unless a window
                              #   skipped its first token, which happens only when stride == max_length)
    logprobs: np.ndarray      # [m] float64, log p(token_ids[positions[i]] | the tokens before it)
    n_windows: int = 1        # model passes used (more than one: sliding window)

    @property
    def mean_nll(self):
        """Mean negative log-likelihood per scored token, in nats (transformers' `loss`)."""
        return float(-np.mean(self.logprobs))

    @property
    def perplexity(self):
        return float(np.exp(self.mean_nll))


def target_logprobs(logits, targets, chunk=256):
    """log softmax(logits)[i, targets[i]] for each row: logits [t, vocab], targets [t] -> [t] float64.

    Rows go in chunks so a 1024 x 50257 window needs no second full-size array; ops.log_softmax
    subtracts each row's max first, here in float64.
    """
    logits = np.asarray(logits)
    out = np.empty(len(targets), dtype=np.float64)
    for start in range(0, len(targets), chunk):
        log_p = ops.log_softmax(logits[start : start + chunk].astype(np.float64))   # [c, vocab]
        out[start : start + chunk] = log_p[np.arange(len(log_p)), targets[start : start + chunk]]
    return out


def score(model, input_ids, stride=None, max_length=None, progress=False):
    """Per-token log-probabilities of one text (a list or [n] / [1, n] array of ids).

    max_length: window length, default the model's n_positions. stride: how far each window moves
    on, default max_length // 2 (the guide uses 512 for 1024); only used when the text is longer
    than max_length. progress=True shows a progress bar (tqdm, on stderr) over the windows.
    """
    try:
        ids = np.asarray(input_ids)
    except ValueError:
        raise ValueError("score takes one text: input_ids of shape [n] or [1, n], got rows of "
                         "different lengths") from None
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise ValueError(f"score takes one text: input_ids of shape [n] or [1, n], got shape {ids.shape}")
    if ids.size and (ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer)):
        # astype(int64) would turn 1.7 into 1: a score for other tokens, without a word
        raise ValueError(f"input_ids must hold integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size < 2:
        raise ValueError(f"need at least 2 tokens to score (the first one is only context), got {ids.size}")
    vocab_size, n_positions = model.config.vocab_size, model.config.n_positions
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"input_ids holds ids outside [0, {vocab_size}) (vocab_size of the model)")
    max_length = n_positions if max_length is None else max_length
    if not is_int(max_length) or not 2 <= max_length <= n_positions:
        raise ValueError(f"max_length must be an integer in [2, {n_positions}] (n_positions), got {max_length!r}")
    stride = max(max_length // 2, 1) if stride is None else stride
    if not is_int(stride) or not 1 <= stride <= max_length:
        raise ValueError(f"stride must be an integer in [1, max_length={max_length}], got {stride!r}")
    max_length, stride = int(max_length), int(stride)

    n = ids.size
    positions, logprobs = [], []
    scored_until = 1                               # positions < scored_until are done (0 never is)
    begins = range(0, max(n - max_length, 0) + stride, stride)    # the last window reaches the end
    if progress and len(begins) > 1:
        from tqdm import tqdm
        begins = tqdm(begins, desc="scoring", unit="window", leave=False)
    for begin in begins:
        end = min(begin + max_length, n)
        first = max(scored_until, begin + 1)       # a window's first token has no context in it
        if first < end:
            window = ids[begin:end][None, :]                          # [1, w]
            logits = model(input_ids=window).logits[0]                # [w, vocab]
            # logits at window index j predict the token at position begin + j + 1
            rows = np.arange(first - 1 - begin, end - 1 - begin)
            positions.append(np.arange(first, end))
            logprobs.append(target_logprobs(logits[rows], ids[first:end]))
        scored_until = end
        if end == n:
            break
    return Score(token_ids=ids, positions=np.concatenate(positions),
                 logprobs=np.concatenate(logprobs), n_windows=len(logprobs))


def perplexity(model, input_ids, stride=None, max_length=None):
    """exp(mean negative log-likelihood) of a text; see `score`."""
    return score(model, input_ids, stride=stride, max_length=max_length).perplexity
