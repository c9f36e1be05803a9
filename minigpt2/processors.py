"""Logits processors: the rules that turn one step's scores into the scores a token is chosen from.

scores [rows, vocab] float32 -> new scores [rows, vocab] (never in place). Removed tokens get -inf,
so their probability is 0. `process_logits` applies them in transformers' order
(`GenerationMixin._get_logits_processor`):

    sequence_bias, repetition_penalty, no_repeat_ngram_size, bad_words_ids, min_length,
    min_new_tokens, forced_bos_token_id, forced_eos_token_id, exponential_decay_length_penalty,
    suppress_tokens, begin_suppress_tokens                     # always (greedy, sampling, beams)
    temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff   # only when sampling
    renormalize_logits                                         # last, when asked

Each function names the transformers class it mirrors. Where transformers looks at a row's
tokens, padding (attention_mask 0) does not count here, so a left-padded row gets what it gets
alone. Where it looks at lengths, the length is counted in new tokens (the same for every row).

Sampling procedure (portable: same seed, same tokens on every machine up to float rounding of the
logits themselves): each step draws `u = rng.random(rows)` from `numpy.random.Generator(PCG64(seed))`,
one uniform per row in row order (finished rows draw too). For each row, take the tokens whose
processed score is finite, in vocab order; p = their softmax in float64; the token is the first
one whose cumulative sum of p exceeds `u * sum(p)`.
"""

import numpy as np

from minigpt2 import ops


def apply_repetition_penalty(scores, input_ids, penalty, attention_mask=None):
    """Penalise every token id already in the row (transformers' RepetitionPenaltyLogitsProcessor):
    a score s < 0 becomes s * penalty, otherwise s / penalty; each id once, however often it occurs.
    input_ids [rows, seq]; positions where attention_mask is 0 (left padding) do not count."""
    if penalty == 1.0:
        return scores
    out = scores.copy()
    for row, ids in enumerate(real_tokens(input_ids, attention_mask)):
        seen = np.unique(ids[(ids >= 0) & (ids < scores.shape[1])])   # ids past the vocab cannot be generated
        values = out[row, seen]
        out[row, seen] = np.where(values < 0, values * penalty, values / penalty)
    return out


def real_tokens(input_ids, attention_mask=None):
    """[rows, seq] -> one 1-D array per row, without its padding."""
    input_ids = np.asarray(input_ids)
    if attention_mask is None:
        return list(input_ids)
    return [ids[np.asarray(m) != 0] for ids, m in zip(input_ids, attention_mask)]


def apply_min_new_tokens(scores, n_new_tokens, min_new_tokens, eos_token_ids):
    """While fewer than min_new_tokens tokens were generated, EOS gets -inf
    (transformers' MinNewTokensLengthLogitsProcessor and, counted in new tokens, MinLength)."""
    if n_new_tokens >= min_new_tokens or not eos_token_ids:
        return scores
    scores = scores.copy()
    # ids past the vocabulary cannot be generated anyway (transformers' isin skips them too)
    scores[:, [i for i in eos_token_ids if 0 <= i < scores.shape[1]]] = -np.inf
    return scores


def apply_no_repeat_ngram(scores, input_ids, ngram_size, attention_mask=None):
    """Ban every token that would repeat an n-gram already in the row (transformers'
    NoRepeatNGramLogitsProcessor): if the last n-1 tokens occurred before, followed by x, x gets -inf."""
    if not ngram_size:
        return scores
    out = scores.copy()
    for row, ids in enumerate(real_tokens(input_ids, attention_mask)):
        ids = ids.tolist()
        if len(ids) < ngram_size:
            continue
        prefix = ids[len(ids) - ngram_size + 1:]
        banned = [ids[i + ngram_size - 1] for i in range(len(ids) - ngram_size + 1)
                  if ids[i : i + ngram_size - 1] == prefix]
        out[row, [b for b in banned if b < scores.shape[1]]] = -np.inf
    return out


def apply_sequence_bias(scores, input_ids, sequence_bias, attention_mask=None):
    """Add a bias to the last token of each listed sequence when the row ends with the rest of it
    (transformers' SequenceBiasLogitsProcessor; bad words are a bias of -inf).
    sequence_bias: {tuple of ids: float}."""
    if not sequence_bias:
        return scores
    bias = np.zeros_like(scores)
    rows = real_tokens(input_ids, attention_mask)
    for sequence, value in sequence_bias.items():
        prefix, last = list(sequence[:-1]), sequence[-1]
        for row, ids in enumerate(rows):
            if not prefix or (len(prefix) <= len(ids) and ids[len(ids) - len(prefix):].tolist() == prefix):
                bias[row, last] += np.float32(value)
    return scores + bias


def bad_words_bias(bad_words_ids, eos_token_ids):
    """bad_words_ids as a sequence bias of -inf; a bad word that is just an EOS id is ignored
    (transformers' NoBadWordsLogitsProcessor)."""
    return {tuple(word): -np.inf for word in bad_words_ids if not (len(word) == 1 and word[0] in eos_token_ids)}


def apply_forced_token(scores, token_ids):
    """Every token but token_ids gets -inf, those get 0 (transformers' ForcedBOS/ForcedEOS rule)."""
    out = np.full_like(scores, -np.inf)
    out[:, token_ids] = 0
    return out


def apply_exponential_decay_length_penalty(scores, n_new_tokens, start, factor, eos_token_ids):
    """After `start` new tokens, raise the EOS scores by |s| * (factor ** (n_new - start) - 1)
    (transformers' ExponentialDecayLengthPenalty)."""
    if n_new_tokens <= start or not eos_token_ids:
        return scores
    out = scores.copy()
    eos = out[:, eos_token_ids]
    penalty = np.abs(eos) * np.float32(pow(factor, n_new_tokens - start) - 1)
    out[:, eos_token_ids] = eos + np.where(np.isfinite(eos), penalty, 0)
    return out


def apply_suppress_tokens(scores, token_ids):
    """These tokens get -inf (transformers' SuppressTokensLogitsProcessor)."""
    out = scores.copy()
    out[:, [t for t in token_ids if t < scores.shape[1]]] = -np.inf
    return out


def apply_temperature(scores, temperature):
    """Divide the scores by the temperature (transformers' TemperatureLogitsWarper).

    A tiny temperature can overflow float32 to +inf (1 / 1e-38), where the order of the tokens is
    lost: then each row is shifted by its maximum first (softmax does not change), so the most
    likely token keeps 0 and the rest fall to large negative scores, as the limit t -> 0 says."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy decoding), got {temperature}")
    if temperature == 1.0:
        return scores
    with np.errstate(over="ignore"):                 # an overflow is handled just below
        out = (scores / np.float32(temperature)).astype(scores.dtype)
        if np.isposinf(out).any():
            shifted = scores - np.max(scores, axis=-1, keepdims=True)
            out = (shifted / np.float32(temperature)).astype(scores.dtype)
    return out


def apply_top_k(scores, top_k, min_tokens_to_keep=1):
    """Keep the top_k highest scores of each row (transformers' TopKLogitsWarper): tokens tied
    with the k-th are all kept. top_k None or 0 = off."""
    if not top_k:
        return scores
    top_k = min(max(int(top_k), min_tokens_to_keep), scores.shape[-1])
    kth_highest = -np.partition(-scores, top_k - 1, axis=-1)[:, top_k - 1 : top_k]   # [rows, 1]
    return np.where(scores < kth_highest, -np.inf, scores).astype(scores.dtype)


def apply_top_p(scores, top_p, min_tokens_to_keep=1):
    """Nucleus filtering (transformers' TopPLogitsWarper): keep the smallest set of most likely
    tokens whose probabilities add up to at least top_p; the token that crosses top_p stays
    (a token stays when the probability ranked above it is < top_p).

    Only the few most likely tokens are sorted: the top 64 candidates, 8x more until their mass
    reaches top_p. Probabilities in float32 (as transformers), sums in float64.
    """
    if top_p >= 1.0:
        return scores
    rows, vocab = scores.shape
    probs = ops.softmax(scores)                              # [rows, vocab] float32, as transformers
    out = np.full_like(scores, -np.inf)
    for row in range(rows):
        n_candidates = min(64, vocab)
        while True:
            if n_candidates * 8 < vocab:
                candidates = np.argpartition(-scores[row], n_candidates - 1)[:n_candidates]
            else:
                candidates = np.arange(vocab)
            candidates = candidates[np.argsort(-scores[row, candidates])]      # most likely first
            p = probs[row, candidates].astype(np.float64)
            mass_above = np.cumsum(p) - p                                       # [n_candidates]
            if candidates.size == vocab or mass_above[-1] + p[-1] >= top_p:
                break
            n_candidates *= 8
        n_keep = max(int(np.sum(mass_above < top_p)), min_tokens_to_keep)
        keep = candidates[:n_keep]
        out[row, keep] = scores[row, keep]
    return out


def keep_at_least(scores, remove, min_tokens_to_keep, ties=False):
    """remove [rows, vocab] bool, except the min_tokens_to_keep highest scores of each row
    (ties=True: also every token tied with the last of them, as transformers' epsilon/eta rule)."""
    k = min(min_tokens_to_keep, scores.shape[-1])
    if ties:
        kth_highest = -np.partition(-scores, k - 1, axis=-1)[:, k - 1 : k]      # [rows, 1]
        remove = remove & (scores < kth_highest)
    else:
        top = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
        remove = remove.copy()
        np.put_along_axis(remove, top, False, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def apply_min_p(scores, min_p, min_tokens_to_keep=1):
    """Remove tokens whose probability is below min_p times the top one's (transformers' MinPLogitsWarper)."""
    probs = ops.softmax(scores)
    return keep_at_least(scores, probs < np.float32(min_p) * probs.max(axis=-1, keepdims=True), min_tokens_to_keep)


def apply_typical_p(scores, typical_p, min_tokens_to_keep=1):
    """Locally typical sampling (transformers' TypicalLogitsWarper): rank tokens by how far their
    surprise -log p is from the entropy; keep the closest ones until their mass reaches typical_p."""
    log_p = ops.log_softmax(scores)                                          # [rows, vocab] float32
    with np.errstate(invalid="ignore"):
        entropy = -np.nansum(log_p * np.exp(log_p), axis=-1, keepdims=True)   # -inf * 0 = NaN: skipped
    distance = np.abs(-log_p - entropy)
    order = np.argsort(distance, axis=-1, kind="stable")                     # closest first
    sorted_distance = np.take_along_axis(distance, order, -1)
    cumulative = np.cumsum(ops.softmax(np.take_along_axis(scores, order, -1)), axis=-1)
    last = np.minimum((cumulative < np.float32(typical_p)).sum(axis=-1), scores.shape[-1] - 1)
    remove_sorted = sorted_distance > np.take_along_axis(sorted_distance, last[:, None], -1)
    remove_sorted[:, :min_tokens_to_keep] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def apply_epsilon_cutoff(scores, epsilon, min_tokens_to_keep=1):
    """Remove tokens with probability < epsilon (transformers' EpsilonLogitsWarper)."""
    return keep_at_least(scores, ops.softmax(scores) < np.float32(epsilon), min_tokens_to_keep, ties=True)


def apply_eta_cutoff(scores, eta, min_tokens_to_keep=1):
    """Remove tokens with probability < min(eta, sqrt(eta) * exp(-entropy)) (transformers' EtaLogitsWarper)."""
    probs = ops.softmax(scores)
    log_p = ops.log_softmax(scores)
    with np.errstate(invalid="ignore"):             # 0 * -inf for removed tokens: dropped by the where
        entropy = -np.sum(np.where(probs > 0, probs * log_p, 0), axis=-1, keepdims=True)
    eta = np.float32(eta)
    cutoff = np.minimum(eta, np.sqrt(eta) * np.exp(-entropy))
    return keep_at_least(scores, probs < cutoff, min_tokens_to_keep, ties=True)


def process_logits(scores, input_ids, config, n_new_tokens=0, attention_mask=None, min_tokens_to_keep=1):
    """All processors that `config` (a GenerationConfig, checked) turns on, in transformers' order.
    n_new_tokens: tokens generated so far; input_ids [rows, prompt + n_new]. -> [rows, vocab] float32."""
    eos = config.eos_token_ids
    scores = apply_sequence_bias(scores, input_ids, config.sequence_bias, attention_mask)
    scores = apply_repetition_penalty(scores, input_ids, config.repetition_penalty, attention_mask)
    scores = apply_no_repeat_ngram(scores, input_ids, config.no_repeat_ngram_size, attention_mask)
    if config.bad_words_ids:
        scores = apply_sequence_bias(scores, input_ids, bad_words_bias(config.bad_words_ids, eos), attention_mask)
    prompt_length = np.shape(input_ids)[1] - n_new_tokens
    scores = apply_min_new_tokens(scores, n_new_tokens, max(config.min_new_tokens or 0,
                                                            (config.min_length or 0) - prompt_length), eos)
    if config.forced_bos_token_id is not None and prompt_length + n_new_tokens == 1:
        scores = apply_forced_token(scores, [config.forced_bos_token_id])
    if config.forced_eos_token_id is not None and n_new_tokens == config.max_new_tokens - 1:
        scores = apply_forced_token(scores, config.forced_eos_token_id)
    if config.exponential_decay_length_penalty is not None:
        start, factor = config.exponential_decay_length_penalty
        scores = apply_exponential_decay_length_penalty(scores, n_new_tokens, start, factor, eos)
    if config.suppress_tokens:
        scores = apply_suppress_tokens(scores, config.suppress_tokens)
    begin = 1 if prompt_length == 1 and config.forced_bos_token_id is not None else 0
    if config.begin_suppress_tokens and n_new_tokens == begin:
        scores = apply_suppress_tokens(scores, config.begin_suppress_tokens)
    if config.do_sample:
        keep = min_tokens_to_keep
        if config.temperature != 1.0:
            scores = apply_temperature(scores, config.temperature)
        scores = apply_top_k(scores, config.top_k, keep)
        scores = apply_top_p(scores, config.top_p, keep)
        if config.min_p is not None:
            scores = apply_min_p(scores, config.min_p, keep)
        if config.typical_p is not None and config.typical_p < 1.0:
            scores = apply_typical_p(scores, config.typical_p, keep)
        if config.epsilon_cutoff and 0 < config.epsilon_cutoff < 1:
            scores = apply_epsilon_cutoff(scores, config.epsilon_cutoff, keep)
        if config.eta_cutoff and 0 < config.eta_cutoff < 1:
            scores = apply_eta_cutoff(scores, config.eta_cutoff, keep)
    if config.renormalize_logits:
        scores = ops.log_softmax(scores)
    return scores


def sample_tokens(scores, rng):
    """Draw one token per row from softmax(scores) with the documented procedure (module doc).
    scores [rows, vocab] -> token ids [rows] int64."""
    check_not_nan(scores)
    u = rng.random(scores.shape[0])                                       # [rows], in [0, 1)
    tokens = np.empty(scores.shape[0], dtype=np.int64)
    for row in range(scores.shape[0]):
        finite = np.isfinite(scores[row])
        kept = np.arange(finite.size) if finite.all() else np.flatnonzero(finite)   # in vocab order
        if np.isposinf(scores[row]).any():         # +inf outweighs everything: the first such token
            kept = np.flatnonzero(np.isposinf(scores[row]))[:1]
        if kept.size == 0:
            raise ValueError(f"row {row}: every token was filtered out (all scores are -inf); "
                             "loosen the filters (top_k, top_p, min_p, bad_words_ids, ...)")
        cumulative = np.cumsum(ops.softmax(scores[row, kept].astype(np.float64)))
        index = np.searchsorted(cumulative, u[row] * cumulative[-1], side="right")
        tokens[row] = kept[min(index, kept.size - 1)]    # u * total can round up to total
    return tokens


def check_not_nan(logits):
    """A NaN score says the model is broken (a NaN weight, an overflow): no token can be chosen."""
    if np.isnan(logits).any():
        rows = np.flatnonzero(np.isnan(logits).any(axis=-1)).tolist()
        raise ValueError(f"the model produced NaN logits (rows {rows[:8]}): its weights or inputs hold NaN "
                         "or overflow; check the checkpoint (e.g. np.isnan on model.state_dict() values)")


def make_rng(seed):
    """seed None -> fresh unseeded generator; int -> Generator(PCG64(seed)); a Generator is used as is."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.Generator(np.random.PCG64())
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be None, an integer >= 0 or a numpy Generator, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))
