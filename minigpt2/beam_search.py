"""Beam search: keep the num_beams most likely continuations of each prompt, not just the best one.

Every step, each of the k running beams of a prompt proposes every token; a candidate's score is
its beam's summed log-probability plus log p(token). Of the k * vocab candidates, the best
2k (more with several EOS ids) are kept, so that k beams can go on even when the best ones end:

    candidates that end (EOS, or the last allowed token) -> a finished hypothesis, scored
        sum of log p / (new tokens) ** length_penalty   (> 0 favours long ones, < 0 short ones)
        and kept if among the k best finished so far;
    the k best that do not end                           -> next step's running beams.

The search stops when no running beam can still beat the worst of k finished hypotheses
(early_stopping=False: judged at the current length; "never": at max_length when
length_penalty > 0), or as soon as k hypotheses are finished (early_stopping=True), or at
max_length. This is transformers 5's `_beam_search` step for step, in NumPy, float32 as there.

The k beams of a prompt are k rows of one batch [batch * k, ...]: the model runs them together
(the weights are streamed once per step for all of them), and after each step the KV cache rows
are reordered in place (`KVCache.reorder`) to follow the beams that survived.

With do_sample=True the 2k candidates are drawn without replacement from softmax(candidate
scores) instead of taken from the top: one uniform u per draw from the seeded generator, in row
order; each draw takes the first candidate (in index order) whose cumulative probability among
the candidates not yet drawn exceeds u * their total (not torch's random numbers).
"""

from dataclasses import dataclass

import numpy as np

from minigpt2 import ops
from minigpt2.inputs import positions_from_mask
from minigpt2.processors import check_not_nan, process_logits

NEG = np.float32(-1e9)          # transformers' "never this one" score, added rather than set


@dataclass
class BeamSearchResult:
    sequences: np.ndarray          # [batch * num_return_sequences, prompt + new] int64
    sequences_scores: np.ndarray   # [batch * num_return_sequences] float32
    beam_indices: np.ndarray       # [batch * num_return_sequences, new] int64
    scores: tuple                  # per step [batch * k, vocab] processed log-probs (output_scores)
    logits: tuple                  # per step [batch * k, vocab] raw logits (output_logits)


def gather(array, index):
    """array [b, n, ...], index [b, m] -> array[i, index[i, j], ...] as [b, m, ...] (a copy)."""
    return array[np.arange(array.shape[0])[:, None], index]


def top_indices(scores, k):
    """The k highest of each row, best first: [b, n] -> [b, k]."""
    if 8 * k < scores.shape[1]:                  # large rows: partition first (no negated copy)
        part = np.argpartition(scores, scores.shape[1] - k, axis=-1)[:, -k:]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, -1), axis=-1, kind="stable")[:, :k]
    return np.take_along_axis(part, order, -1)


def sample_without_replacement(scores, n, rng):
    """[b, m] candidate scores -> [b, n] indices drawn without replacement from softmax(scores)."""
    out = np.empty((scores.shape[0], n), dtype=np.int64)
    for row in range(scores.shape[0]):
        p = ops.softmax(scores[row].astype(np.float64))
        for j in range(n):
            cumulative = np.cumsum(p)
            index = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), p.size - 1)
            while p[index] == 0:                     # u * total rounded onto a drawn or impossible one
                index -= 1
            out[row, j] = index
            p[index] = 0
    return out


def beam_search(model, ids, mask, config, rng=None):
    """ids, mask [batch, prompt] (checked, left-padded); config a resolved GenerationConfig."""
    batch, prompt_length = ids.shape
    k, eos = config.num_beams, config.eos_token_ids
    max_length = config.max_length
    n_keep = max(2, 1 + len(eos)) * k                                   # candidates kept per step
    is_top_k = np.arange(n_keep) < k
    fill = (config.pad_token_id or eos[0]) if eos else -1                # transformers' filler
    min_tokens_to_keep = len(eos) + 1 if eos else 2

    running = np.full((batch, k, max_length), fill, dtype=np.int64)      # [b, k, max_length]
    running[:, :, :prompt_length] = ids[:, None, :]
    finished_sequences = running.copy()
    running_scores = np.zeros((batch, k), np.float32)
    running_scores[:, 1:] = NEG                 # step 1: only beam 0 proposes (the beams are equal)
    finished_scores = np.full((batch, k), NEG, np.float32)
    is_finished = np.zeros((batch, k), bool)
    improvable = np.ones((batch, 1), bool)
    running_beams = np.full((batch, k, max_length - prompt_length), -1, np.int64)
    finished_beams = running_beams.copy()
    all_scores, all_logits = [], []

    # prefill the prompts once; the cache then copies each row to its k beams
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=True,
                logits_to_keep=1)
    check_not_nan(out.logits)
    cache = out.past_key_values
    cache.reorder(np.repeat(np.arange(batch), k))
    logits = np.repeat(np.asarray(out.logits[:, -1, :], np.float32), k, axis=0)   # [b * k, vocab]
    beam_mask = np.repeat(mask, k, axis=0)                               # [b * k, prompt]
    cur_len = prompt_length
    while True:
        n_new = cur_len - prompt_length
        flat_running = running[:, :, :cur_len].reshape(batch * k, cur_len)
        flat_mask = np.concatenate([beam_mask, np.ones((batch * k, n_new), np.int64)], axis=1)
        check_not_nan(logits)
        log_probs = process_logits(ops.log_softmax(logits), flat_running, config, n_new, flat_mask,
                                   min_tokens_to_keep)                   # [b * k, vocab]
        if config.output_scores:
            all_scores.append(log_probs)
        if config.output_logits:
            all_logits.append(logits)
        vocab = log_probs.shape[-1]
        candidates = (log_probs.reshape(batch, k, vocab) + running_scores[:, :, None]).reshape(batch, k * vocab)

        # c. the n_keep best (or sampled) continuations over all beams of each prompt
        if config.do_sample:
            picked = sample_without_replacement(candidates, n_keep, rng)
            order = np.argsort(-np.take_along_axis(candidates, picked, -1), axis=-1, kind="stable")
            picked = np.take_along_axis(picked, order, -1)
        else:
            picked = top_indices(candidates, n_keep)                     # [b, n_keep]
        top_scores = np.take_along_axis(candidates, picked, -1)
        from_beam, tokens = picked // vocab, picked % vocab
        top_sequences = gather(running, from_beam)                       # [b, n_keep, max_length]
        top_sequences[:, :, cur_len] = tokens
        top_beams = gather(running_beams, from_beam)
        top_beams[:, :, n_new] = from_beam + np.arange(batch)[:, None] * k

        # d. which candidates end here: an EOS, or the last allowed token
        ends = np.isin(tokens, eos) | (cur_len + 1 >= max_length)        # [b, n_keep]

        # e. the k best that go on
        going_on = top_scores + ends.astype(np.float32) * NEG
        best = top_indices(going_on, k)
        running, running_scores, running_beams = gather(top_sequences, best), gather(going_on, best), gather(top_beams, best)

        # f. the k best finished hypotheses so far
        just_finished = ends & is_top_k[None, :]
        penalised = top_scores / np.float32((cur_len + 1 - prompt_length) ** config.length_penalty)
        full = is_finished.all(axis=-1, keepdims=True) & (config.early_stopping is True)
        penalised = penalised + full * NEG + (~improvable) * NEG + (~just_finished) * NEG
        merged_scores = np.concatenate([finished_scores, penalised.astype(np.float32)], axis=1)
        best = top_indices(merged_scores, k)
        finished_sequences = gather(np.concatenate([finished_sequences, top_sequences], axis=1), best)
        finished_scores = gather(merged_scores, best)
        finished_beams = gather(np.concatenate([finished_beams, top_beams], axis=1), best)
        is_finished = gather(np.concatenate([is_finished, just_finished], axis=1), best)

        # g. the cache follows the beams that go on; stop when nothing can improve
        cache.reorder(running_beams[:, :, n_new].reshape(-1))
        cur_len += 1
        if config.early_stopping == "never" and config.length_penalty > 0:
            best_length = max_length - prompt_length
        else:
            best_length = cur_len - prompt_length
        best_possible = running_scores[:, :1] / np.float32(best_length ** config.length_penalty)
        worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), NEG)
        improvable = improvable & (best_possible > worst_finished).any(axis=-1, keepdims=True)
        if (not improvable.any() or (is_finished.all() and config.early_stopping is True) or ends.all()):
            break
        full_mask = np.concatenate([beam_mask, np.ones((batch * k, cur_len - prompt_length), np.int64)], axis=1)
        out = model(input_ids=running[:, :, cur_len - 1].reshape(-1, 1), attention_mask=full_mask,
                    position_ids=positions_from_mask(full_mask)[:, -1:], past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        cache = out.past_key_values
        logits = np.array(out.logits[:, -1, :], dtype=np.float32)

    n = config.num_return_sequences
    sequences = finished_sequences[:, :n].reshape(batch * n, max_length)
    beams = finished_beams[:, :n].reshape(batch * n, -1)
    n_generated = int((beams >= 0).sum(axis=1).max())
    return BeamSearchResult(sequences=sequences[:, :prompt_length + n_generated],
                            sequences_scores=finished_scores[:, :n].reshape(-1), beam_indices=beams[:, :n_generated],
                            scores=tuple(all_scores), logits=tuple(all_logits))
