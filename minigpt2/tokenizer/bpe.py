"""The BPE merge loops, as free functions over the merge tables (GPT2Tokenizer and explain.py call them).

    bpe_ids(data, byte_ids, merge_ranks, merge_ids)        bytes of one piece -> token ids (fast)
    bpe_ids_long(data, byte_ids, merge_ranks, merge_ids)   the same merges for long pieces, O(n log n)
    bpe_symbols(data, bpe_ranks, steps=None)               OpenAI's loop on vocabulary strings (readable)

The tables: `byte_ids[b]` is the id of the single-byte token for byte b; `merge_ranks[(left id,
right id)]` is a merge's rank (its line in vocab.bpe, lower first) and `merge_ids[(left id,
right id)]` the id of the merged token; `bpe_ranks[(left str, right str)]` is the rank by strings.
"""

import heapq
from itertools import repeat

from minigpt2.tokenizer.bytes_unicode import bytes_to_symbols

NO_MERGE = float("inf")  # the rank of a pair that has no merge
LONG_PIECE_BYTES = 256   # longer pieces use the heap loop (bpe_ids_long): same ids, not quadratic


def bpe_ids(data, byte_ids, merge_ranks, merge_ids):
    """Bytes of one piece -> token ids: merge the lowest-ranked adjacent pair until none is left.

    `pair_ranks[i]` is the merge rank of (ids[i], ids[i + 1]). Each round merges the leftmost
    pair of lowest rank and re-ranks only its two new neighbours (as tiktoken and `tokenizers`
    do). OpenAI's loop (`bpe_symbols`) instead merges every occurrence of that pair in one
    round; the two agree because a merge's result only takes part in later (higher-ranked)
    merges, so the other occurrences stay the lowest until they are merged too, left to right.
    tests/test_tokenizer.py checks both on every vocabulary entry.
    """
    if len(data) > LONG_PIECE_BYTES:
        return bpe_ids_long(data, byte_ids, merge_ranks, merge_ids)
    ids = [byte_ids[b] for b in data]               # one token per byte to start
    get_rank = merge_ranks.get
    pair_ranks = list(map(get_rank, zip(ids, ids[1:]), repeat(NO_MERGE)))
    while pair_ranks:
        best = min(pair_ranks)
        if best == NO_MERGE:
            break                                   # no adjacent pair can merge
        i = pair_ranks.index(best)                  # the leftmost pair with that rank
        ids[i:i + 2] = [merge_ids[ids[i], ids[i + 1]]]
        del pair_ranks[i]
        if i > 0:                                   # the pair (left neighbour, new token)
            pair_ranks[i - 1] = get_rank((ids[i - 1], ids[i]), NO_MERGE)
        if i < len(pair_ranks):                     # the pair (new token, right neighbour)
            pair_ranks[i] = get_rank((ids[i], ids[i + 1]), NO_MERGE)
    return ids


def bpe_ids_long(data, byte_ids, merge_ranks, merge_ids):
    """`bpe_ids` for long pieces: the same merges in the same order, in O(n log n).

    Each round of `bpe_ids` scans the whole piece, so a piece of n bytes costs O(n^2): a
    40 KB run of one emoji (a single piece to the pre-tokenizer) took 20 s. Here the pairs
    wait in a heap ordered by (rank, position of the left token), the tokens form a linked
    list, and an entry whose tokens have changed since it was pushed is skipped when popped.
    """
    ids = [byte_ids[b] for b in data]               # one token per byte; merged ones go dead
    n = len(ids)
    get_rank = merge_ranks.get
    next_index, prev_index, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
    heap = [(rank, i) for i, rank in enumerate(map(get_rank, zip(ids, ids[1:]))) if rank is not None]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = next_index[i]
        if not alive[i] or j == n or get_rank((ids[i], ids[j])) != rank:
            continue                                # stale: that pair is gone
        ids[i] = merge_ids[ids[i], ids[j]]          # token i absorbs its right neighbour j
        alive[j] = False
        next_index[i] = next_index[j]
        if next_index[i] < n:
            prev_index[next_index[i]] = i
        for left in (prev_index[i], i):             # the two pairs the new token is part of
            right = next_index[left] if left >= 0 else n
            if left >= 0 and right < n:
                new_rank = get_rank((ids[left], ids[right]))
                if new_rank is not None:
                    heapq.heappush(heap, (new_rank, left))
    return [token for token, keep in zip(ids, alive) if keep]


def bpe_symbols(data, bpe_ranks, steps=None):
    """OpenAI's loop, on vocabulary strings: b' hello' -> ['Ġhello'].

    Slower, but what you read in encoder.json and vocab.bpe. If `steps` is a list, each
    merge is appended as (rank, left, right, symbols after the merge).
    """
    symbols = list(bytes_to_symbols(data))          # one symbol per byte to start
    while len(symbols) > 1:
        pairs = list(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda pair: bpe_ranks.get(pair, NO_MERGE))
        if best not in bpe_ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
        if steps is not None:
            steps.append((bpe_ranks[best], best[0], best[1], list(symbols)))
    return symbols
