"""Continuous batching: many requests share one decode step, joining and leaving between steps.

One background thread owns the model. Request handlers hand it a `Job` (`Batcher.submit`) and
receive its tokens through `job.emit`, one `TokenEvent` per new token, then one `DoneEvent`.

The batch cache (a KVCache of max_batch rows) has one shared offset, `cache.length`, where the
next step writes for every row. Rows are at different lengths, so each row has its own
position counter (passed as position_ids) and its own slot mask (passed as attention_mask):
which cache slots are that row's tokens.

    slots:      0 1 2 3 4 5 6 7 | offset
    row 0:      . . a a a a a a |          (joined early: 6 live slots)
    row 1:      . . . . . b b b |          (joined later, prompt of 2 tokens, then 1 step)

- Join: a new request is prefilled alone (batch 1, its own cache, exactly as `generate` does,
  so its first token is the one `generate` picks), then its keys/values are copied into a free
  row so that they end at the shared offset. A prompt longer than the offset moves the offset
  up; the other rows get masked slots in between.
- Step: the active rows (kept packed at rows 0..n-1, so no step computes a free row) feed
  their last token; every row writes slot `offset`.
- Leave: a finished, stopped or cancelled row is freed at once: the last active row moves
  into its place.
- Compact: when the offset reaches the cache end, every row's live slots are shifted right-
  aligned to the smallest offset that holds the longest row (positions do not change:
  they are counted per row, not per slot).

Greedy rows match `generate` token for token; a sampled row draws from its own seeded
generator, one uniform per step, exactly as `generate` does for a single row, so other rows
never change its text. (Batched and single-row matmuls round differently in the last float
bits, so logits are equal to rounding, not bit for bit.)
"""

import collections
import itertools
import threading
from dataclasses import dataclass, field

import numpy as np

from minigpt2 import ops
from minigpt2.cache import KVCache
from minigpt2.generate import StreamDecoder, token_bytes_function
from minigpt2.generation_config import GenerationConfig
from minigpt2.processors import make_rng, process_logits, sample_tokens


class QueueFull(Exception):
    """The waiting queue holds max_queue jobs already."""


@dataclass
class Job:
    """One sequence to generate. `emit` is called from the batcher thread with each event."""
    prompt_ids: list
    max_tokens: int
    emit: object
    temperature: float = 1.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0
    seed: object = None
    stop: tuple = ()
    logprobs: object = None           # None, or how many alternatives per token (0 = only the chosen one)
    prompt_logprobs: bool = False     # also score the prompt's tokens (echo with logprobs)
    cancelled: bool = False           # set by the handler (client gone); the row leaves before the next step
    id: int = field(default_factory=itertools.count().__next__)

    def cancel(self):
        self.cancelled = True


@dataclass
class TokenEvent:
    token_id: int
    text: str                          # new text safe to show (may be "", never half a character)
    logprob: float = None              # log p of the token under the model (raw logits)
    top_logprobs: list = None          # [(token_id, logprob)], most likely first


@dataclass
class PromptEvent:
    """The prompt's own logprobs: one (logprob, top) per prompt token after the first."""
    logprobs: list


@dataclass
class DoneEvent:
    finish_reason: str                 # "stop" (EOS or a stop string), "length", "cancelled" or "error"
    n_tokens: int
    text: str = ""                     # text held back until the end (a possible stop-string start)
    error: str = None


class _Row:
    """A job being decoded: its sampling state and where its tokens are."""

    def __init__(self, job, decoder, position):
        self.job = job
        self.greedy = job.temperature == 0
        self.rng = None if self.greedy else make_rng(job.seed)
        # the processors' settings, as generate() would build them for this request (checked at entry)
        self.settings = GenerationConfig(do_sample=not self.greedy, temperature=job.temperature or 1.0,
                                         top_k=job.top_k, top_p=job.top_p)
        self.decoder = decoder
        self.ids = list(job.prompt_ids)     # prompt + generated (the processors read it)
        self.position = position            # position of the next token fed
        self.n_new = 0


class Batcher:
    """The decode loop in one thread; `submit` is safe to call from any thread."""

    def __init__(self, model, tokenizer, max_batch=8, max_queue=64):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
        self.model, self.tokenizer = model, tokenizer
        self.config = model.config
        self.max_batch, self.max_queue = max_batch, max_queue
        self.eos_token_ids = [tokenizer.eos_token_id]
        self.token_bytes = token_bytes_function(tokenizer)
        cfg = self.config
        self.cache = KVCache(cfg.n_layer, max_batch, cfg.n_head, cfg.head_dim, cfg.n_positions)
        self.slot_mask = np.zeros((max_batch, cfg.n_positions), dtype=np.int64)   # [rows, slots]
        self.rows = []                        # active rows, packed: rows[i] lives in cache row i
        self.waiting = collections.deque()
        self.lock = threading.Condition()
        self.thread = None
        self.stopping = False
        self.steps = 0                        # decode steps run (for tests and /health)

    # ---- the handlers' side -----------------------------------------------------------------
    def submit(self, job):
        """Queue a job; raises QueueFull when max_queue jobs are already waiting."""
        with self.lock:
            if len(self.waiting) >= self.max_queue:       # jobs whose clients left do not count
                for gone in [j for j in self.waiting if j.cancelled]:
                    self.waiting.remove(gone)
                    gone.emit(DoneEvent("cancelled", 0))
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
            self.waiting.append(job)
            self.lock.notify()

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="minigpt2-batcher", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        with self.lock:
            self.stopping = True
            self.lock.notify()
        if self.thread is not None:
            self.thread.join()

    @property
    def n_active(self):
        return len(self.rows)

    @property
    def n_waiting(self):
        return len(self.waiting)

    # ---- the loop ---------------------------------------------------------------------------
    def _loop(self):
        while True:
            with self.lock:
                while not self.stopping and not self.waiting and not self.rows:
                    self.lock.wait()
                if self.stopping:
                    break
                joining = []
                while self.waiting and len(self.rows) + len(joining) < self.max_batch:
                    joining.append(self.waiting.popleft())
            # a bug must not kill the server: a failing job (or step) fails its rows, the loop goes on
            for job in joining:
                if job.cancelled:
                    job.emit(DoneEvent("cancelled", 0))
                    continue
                try:
                    self._join(job)
                except Exception as error:
                    job.emit(DoneEvent("error", 0, error=f"{type(error).__name__}: {error}"))
            try:
                self._drop_cancelled()
                if self.rows:
                    self._step()
            except Exception as error:
                for row in self.rows:
                    row.job.emit(DoneEvent("error", row.n_new, error=f"{type(error).__name__}: {error}"))
                self.rows = []
                self.slot_mask[:] = 0
                self.cache.length = 0
        for row in self.rows:                 # stopped: nobody waits forever
            row.job.emit(DoneEvent("cancelled", row.n_new))
        with self.lock:
            while self.waiting:
                self.waiting.popleft().emit(DoneEvent("cancelled", 0))

    def _join(self, job):
        """Prefill the prompt alone, pick its first token, copy its keys/values into a free row."""
        ids = np.asarray([job.prompt_ids], dtype=np.int64)              # [1, p]
        p = ids.shape[1]
        if job.prompt_logprobs:                                         # a pass of its own: the prefill
            logits = self.model(input_ids=ids).logits[0]                # below stays as generate's
            job.emit(PromptEvent([_logprobs(logits[i], job.prompt_ids[i + 1], job.logprobs or 0)
                                  for i in range(p - 1)]))
        if job.max_tokens == 0:                                         # scoring only
            job.emit(DoneEvent("length", 0))
            return
        out = self.model(input_ids=ids, attention_mask=np.ones_like(ids), position_ids=np.arange(p)[None],
                         use_cache=True, logits_to_keep=1)             # as generate's prefill
        row = _Row(job, StreamDecoder(self.token_bytes, job.stop), position=p)
        if not self._choose(row, out.logits[:, -1, :]):
            return                                                      # done after one token
        if self.cache.length < p:                                       # the prompt must end at the offset
            self.cache.length = p
        end = self.cache.length
        r = len(self.rows)
        for layer in range(self.config.n_layer):
            self.cache.keys[layer][r, :, end - p:end] = out.past_key_values.keys[layer][0, :, :p]
            self.cache.values[layer][r, :, end - p:end] = out.past_key_values.values[layer][0, :, :p]
        self.slot_mask[r] = 0
        self.slot_mask[r, end - p:end] = 1
        self.rows.append(row)

    def _step(self):
        """One token for every active row."""
        if self.cache.length >= self.cache.max_length:
            self._compact()
        n, end = len(self.rows), self.cache.length
        view = self.cache.first_rows(n)                                 # rows 0..n-1, shared
        self.slot_mask[:n, end] = 1                                     # this step's slot
        out = self.model(input_ids=np.array([[row.ids[-1]] for row in self.rows]),
                         attention_mask=self.slot_mask[:n, :end + 1],
                         position_ids=np.array([[row.position] for row in self.rows]),
                         past_key_values=view, use_cache=True, logits_to_keep=1)
        self.cache.length = view.length
        self.steps += 1
        leaving = []
        for i, row in enumerate(self.rows):
            row.position += 1
            if not self._choose(row, out.logits[i:i + 1, -1, :]):
                leaving.append(i)
        for i in reversed(leaving):                                     # from the end: indices stay valid
            self._free(i)

    def _choose(self, row, logits):
        """Pick the row's next token from logits [1, vocab], emit it; False when the row is done."""
        job = row.job
        scores = np.array(logits, dtype=np.float32)
        scores = process_logits(scores, np.asarray([row.ids]), row.settings, n_new_tokens=row.n_new)
        token = int(np.argmax(scores[0]) if row.greedy else sample_tokens(scores, row.rng)[0])
        row.ids.append(token)
        row.n_new += 1
        logprob, top = (None, None) if job.logprobs is None else _logprobs(logits[0], token, job.logprobs)
        is_eos = token in self.eos_token_ids
        text = "" if is_eos else row.decoder.push(token)               # EOS is not text
        finish = None
        if is_eos or row.decoder.stopped:
            finish = "stop"
        elif row.n_new >= job.max_tokens:
            finish = "length"
        job.emit(TokenEvent(token, text, logprob, top))
        if finish is not None:
            job.emit(DoneEvent(finish, row.n_new, text=row.decoder.finish()))
            return False
        return True

    def _drop_cancelled(self):
        for i in reversed(range(len(self.rows))):
            if self.rows[i].job.cancelled:
                self.rows[i].job.emit(DoneEvent("cancelled", self.rows[i].n_new))
                self._free(i)

    def _free(self, i):
        """Free cache row i at once: the last active row moves into it (rows stay packed)."""
        last = len(self.rows) - 1
        if i != last:
            live = np.flatnonzero(self.slot_mask[last])
            lo, hi = live[0], live[-1] + 1
            for layer in range(self.config.n_layer):
                self.cache.keys[layer][i, :, lo:hi] = self.cache.keys[layer][last, :, lo:hi]
                self.cache.values[layer][i, :, lo:hi] = self.cache.values[layer][last, :, lo:hi]
            self.slot_mask[i] = self.slot_mask[last]
            self.rows[i] = self.rows[last]
        self.slot_mask[last] = 0
        self.rows.pop()
        if not self.rows:
            self.cache.length = 0

    def _compact(self):
        """Shift each row's live slots so that all end at the smallest offset that fits them."""
        n = len(self.rows)
        lives = [np.flatnonzero(self.slot_mask[r]) for r in range(n)]
        end = max(live.size for live in lives)
        for r, live in enumerate(lives):
            start = end - live.size
            for layer in range(self.config.n_layer):
                # fancy indexing copies first, so overlapping source and target are safe
                self.cache.keys[layer][r, :, start:end] = self.cache.keys[layer][r][:, live]
                self.cache.values[layer][r, :, start:end] = self.cache.values[layer][r][:, live]
            self.slot_mask[r] = 0
            self.slot_mask[r, start:end] = 1
        self.cache.length = end


def _logprobs(logits, token, n_top):
    """log p(token) and the n_top most likely (token_id, log p), from raw logits [vocab]."""
    logp = ops.log_softmax(np.asarray(logits, dtype=np.float64))          # [vocab]
    top = []
    if n_top:
        best = np.argpartition(-logp, n_top - 1)[:n_top]
        best = best[np.argsort(-logp[best], kind="stable")]
        top = [(int(t), float(logp[t])) for t in best]
    return float(logp[token]), top


def run_alone(batcher, job, timeout=60.0):
    """Submit `job` and wait for it: (events list); for tests and scripts without a server."""
    done = threading.Event()
    events = []
    user_emit = job.emit

    def emit(event):
        events.append(event)
        if user_emit is not None:
            user_emit(event)
        if isinstance(event, DoneEvent):
            done.set()
    job.emit = emit
    batcher.submit(job)
    if not done.wait(timeout):
        raise TimeoutError("the batcher did not finish the job in time")
    return events

