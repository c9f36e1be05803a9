"""Task heads on the GPT-2 body: classify a sequence, tag each token, find an answer span, and
pick one of several continuations (the double-heads model).

Each class holds ``transformer`` (a GPT2Model) and a small head whose tensors carry
transformers' names, so ``from_pretrained`` reads what transformers' ``save_pretrained`` writes:

    GPT2ForSequenceClassification  score.weight [num_labels, c]                    (no bias)
    GPT2ForTokenClassification     classifier.weight [num_labels, c], .bias [num_labels]
    GPT2ForQuestionAnswering       qa_outputs.weight [2, c], .bias [2]
    GPT2DoubleHeadsModel           lm_head = wte (tied), multiple_choice_head.summary.weight [k, c], .bias [k]

Head tensors are torch ``nn.Linear`` weights, laid out [n_out, n_in] (the body's Conv1D tensors
are [n_in, n_out]), so a head computes x @ W.T + b. Heads are a few columns wide, so they always
run on NumPy; ``backend`` picks the ops of the body (and of the vocabulary-wide LM head).

Label names live on the config: ``config.id2label`` / ``config.label2id`` (num_labels = their length).
Dropout (classifier dropout, summary_first_dropout, summary_last_dropout, ...) only acts while
training: at inference it is the identity, so none is applied here.
"""

import numpy as np

from minigpt2 import ops
from minigpt2.inputs import as_array
from minigpt2.model import GPT2Model, PretrainedMixin, lm_head_params, untied_lm_head
from minigpt2.outputs import (GPT2DoubleHeadsModelOutput, QuestionAnsweringModelOutput,
                              SequenceClassifierOutputWithPast, TokenClassifierOutput)
from minigpt2.weights.checkpoints import split_body_and_heads

IGNORE_INDEX = -100      # a label that takes no part in the loss (transformers' convention)
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class GPT2WithHead(PretrainedMixin):
    """What every head shares: the GPT2Model body, the backend, and loading a saved folder
    (``from_pretrained`` reads what transformers' ``save_pretrained`` writes for the class:
    ``transformer.*`` body tensors and the head's own)."""

    def __init__(self, config, weights, backend="numba", source="weights"):
        """``weights``: every tensor of the checkpoint (body with or without ``transformer.``)."""
        self.config = config
        self.transformer = GPT2Model(config, weights, backend=backend, source=source)
        _, heads = split_body_and_heads(weights)
        self.init_head(heads, source)

    def init_head(self, heads, source):
        """Read the head's own tensors from ``heads`` (checkpoint names); each class has its own."""
        raise NotImplementedError

    def state_dict(self):
        """{checkpoint name: array} of the body (unprefixed); the heads' tensors are their own attributes."""
        return self.transformer.state_dict()

    @property
    def backend(self):
        return self.transformer.backend


# ---- sequence classification -----------------------------------------------------------------------

class GPT2ForSequenceClassification(GPT2WithHead):
    """GPT-2 with a linear ``score`` head (no bias) read at the last real token of each row.

    A causal model has seen the whole text only at its last token, so that token's hidden state
    is the one scored. Which token is last (``last_token_index``):

    - ``attention_mask`` given: the rightmost position whose mask is 1. Works for left and right
      padding, whatever the pad token is.
    - no mask, ``config.pad_token_id`` set: the rightmost token that is not ``pad_token_id``
      (transformers' rule, the only one it uses).
    - no mask, no pad_token_id: the last position; a batch of more than one row is then a
      ValueError, as in transformers, since padding can't be told apart.
    - ``inputs_embeds`` without a mask: the last position (ids are needed to spot pad tokens).

    The pad = eos trap: GPT-2 has no pad token, so people set ``pad_token_id = eos_token_id``
    (50256). Then a real ``<|endoftext|>`` at the end of a text counts as padding under the
    pad-id rule, and the row is classified at the token before it. Pass ``attention_mask`` (it
    says which tokens are padding) and the real last token is used.

    ``labels`` give ``loss``; the problem type is ``config.problem_type`` when set, else chosen as
    transformers chooses: "regression" (MSE) when num_labels == 1, "single_label_classification"
    (cross-entropy, labels [b] ints, -100 ignored) for integer labels, else
    "multi_label_classification" (binary cross-entropy with logits, labels [b, num_labels] floats).
    transformers also writes the chosen type into its config; here the config is left unchanged.
    """

    def init_head(self, heads, source):
        n_labels, c = self.config.num_labels, self.config.n_embd
        self.num_labels = n_labels
        self.score = _head_tensor(heads, "score.weight", (n_labels, c), "[num_labels, n_embd]",
                                  source, type(self).__name__)

    def __call__(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                 position_ids=None, head_mask=None, inputs_embeds=None, labels=None, use_cache=False,
                 output_attentions=False, output_hidden_states=False):
        out = self.transformer(input_ids=input_ids, past_key_values=past_key_values,
                               attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, head_mask=head_mask,
                               inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        h = out.last_hidden_state                                          # [b, t, c]
        b, t = h.shape[:2]
        # input_ids / attention_mask passed the body's checks, so these reshapes are safe
        ids = None if input_ids is None else np.asarray(input_ids).reshape(b, t)
        mask = None if attention_mask is None else np.asarray(attention_mask).reshape(b, -1)[:, -t:]
        last = last_token_index(ids, mask, self.config.pad_token_id, b, t)   # [b]
        pooled = h[np.arange(b), last]                                     # [b, t, c] -> [b, c]
        logits = ops.linear(pooled, self.score.T, None)                    # [b, c] -> [b, num_labels]
        loss = None
        if labels is not None:
            problem_type = choose_problem_type(self.config, self.num_labels, labels)
            loss = sequence_classification_loss(logits, labels, problem_type)
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits,
                                                past_key_values=out.past_key_values,
                                                hidden_states=out.hidden_states,
                                                attentions=out.attentions)


def last_token_index(input_ids, attention_mask, pad_token_id, batch_size, seq_len):
    """[b] index of the token each row is classified by (see GPT2ForSequenceClassification).

    input_ids [b, t] or None, attention_mask [b, t] (the new tokens' part) or None. A row with no
    real token at all gets index 0, what transformers' argmax formula gives.
    """
    positions = np.arange(seq_len)                                     # [t]
    if attention_mask is not None:
        real = attention_mask != 0                                     # [b, t]
    elif pad_token_id is None:
        if batch_size != 1:
            raise ValueError(
                f"cannot find the last token of each of {batch_size} rows: no attention_mask and "
                f"config.pad_token_id is None (transformers: 'Cannot handle batch sizes > 1 if no "
                f"padding token is defined.'). Pass attention_mask, or set config.pad_token_id")
        return np.full(batch_size, seq_len - 1)
    elif input_ids is None:
        return np.full(batch_size, seq_len - 1)                        # embeddings: no pad ids to see
    else:
        real = input_ids != pad_token_id                               # [b, t]
    # the rightmost real position: the largest index among the real ones
    return (positions * real).argmax(axis=-1)                          # [b, t] -> [b]


def choose_problem_type(config, num_labels, labels):
    """config.problem_type when set, else transformers' choice from num_labels and the labels' dtype."""
    problem_type = getattr(config, "problem_type", None)
    if problem_type is not None:
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"config.problem_type must be one of {PROBLEM_TYPES} or None, got "
                             f"{problem_type!r}")
        return problem_type
    if num_labels == 1:
        return "regression"
    # transformers checks for torch.long / torch.int; any NumPy integer dtype counts here (bool does not)
    if np.issubdtype(np.asarray(labels).dtype, np.integer):
        return "single_label_classification"
    return "multi_label_classification"


def sequence_classification_loss(logits, labels, problem_type):
    """logits [b, n] and labels -> float32 scalar loss for one of PROBLEM_TYPES."""
    b, n = logits.shape
    labels = np.asarray(labels)
    if problem_type == "single_label_classification":
        labels = _class_ids(labels, "labels", n, (b,), f"one class index per row, [batch={b}]")
        return ops.cross_entropy(logits, labels)
    labels = _float_labels(labels, "labels")
    if problem_type == "regression" and n == 1:
        # transformers squeezes both sides: one target per row
        if labels.size != b:
            raise ValueError(f"labels for regression with num_labels=1 must hold one value per row "
                             f"([{b}]), got shape {labels.shape}")
        return mse_loss(logits.reshape(b), labels.reshape(b))
    if labels.shape != (b, n):
        raise ValueError(f"labels for {problem_type} must have shape {(b, n)} (batch, num_labels), "
                         f"got {labels.shape}")
    if problem_type == "regression":
        return mse_loss(logits, labels)
    return bce_with_logits_loss(logits, labels)


# ---- token classification ---------------------------------------------------------------------------

class GPT2ForTokenClassification(GPT2WithHead):
    """GPT-2 with a linear ``classifier`` head (with bias) on every token: logits [b, t, num_labels].

    ``labels`` [b, t] (class indices, -100 = ignored, e.g. padding or sub-word pieces) give the
    mean cross-entropy over the labelled tokens. transformers applies dropout before the
    classifier while training; at inference it is the identity.

    Logits at padding positions mean nothing; with right padding and a mask they also differ from
    transformers' there (positions count real tokens here, all tokens there). Label them -100.
    """

    def init_head(self, heads, source):
        n_labels, c = self.config.num_labels, self.config.n_embd
        self.num_labels = n_labels
        name = type(self).__name__
        self.classifier = (
            _head_tensor(heads, "classifier.weight", (n_labels, c), "[num_labels, n_embd]", source, name),
            _head_tensor(heads, "classifier.bias", (n_labels,), "[num_labels]", source, name))

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 head_mask=None, inputs_embeds=None, labels=None, output_attentions=False,
                 output_hidden_states=False):
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids, position_ids=position_ids,
                               head_mask=head_mask, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        h = out.last_hidden_state                                          # [b, t, c]
        weight, bias = self.classifier
        logits = ops.linear(h, weight.T, bias)                             # [b, t, c] -> [b, t, num_labels]
        loss = None
        if labels is not None:
            b, t = h.shape[:2]
            labels = _class_ids(labels, "labels", self.num_labels, (b, t), "[batch, seq] as input_ids")
            loss = ops.cross_entropy(logits.reshape(b * t, -1), labels.reshape(-1))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


# ---- question answering -----------------------------------------------------------------------------

class GPT2ForQuestionAnswering(GPT2WithHead):
    """GPT-2 with ``qa_outputs`` (a linear layer to 2 numbers per token): start_logits and
    end_logits [b, t], the scores of each token as the first / last token of the answer span.

    ``start_positions`` and ``end_positions`` ([b] or [b, 1]) give ``loss``, as transformers: each
    is clamped to 0..t, a position equal to t (outside the input) is ignored, and the loss is the
    mean of the start and end cross-entropies (NaN when every row is ignored, as in torch).
    """

    def init_head(self, heads, source):
        c, name = self.config.n_embd, type(self).__name__
        self.qa_outputs = (_head_tensor(heads, "qa_outputs.weight", (2, c), "[2, n_embd]", source, name),
                           _head_tensor(heads, "qa_outputs.bias", (2,), "[2]", source, name))

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 head_mask=None, inputs_embeds=None, start_positions=None, end_positions=None,
                 output_attentions=False, output_hidden_states=False):
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions for the loss, or neither")
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids, position_ids=position_ids,
                               head_mask=head_mask, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        h = out.last_hidden_state                                          # [b, t, c]
        weight, bias = self.qa_outputs
        logits = ops.linear(h, weight.T, bias)                             # [b, t, c] -> [b, t, 2]
        start_logits = np.ascontiguousarray(logits[..., 0])                # [b, t]
        end_logits = np.ascontiguousarray(logits[..., 1])                  # [b, t]
        loss = None
        if start_positions is not None:
            b, t = h.shape[:2]
            ignored = t          # positions past the input are clamped to t, then ignored
            start = np.clip(_span_positions(start_positions, "start_positions", b), 0, ignored)
            end = np.clip(_span_positions(end_positions, "end_positions", b), 0, ignored)
            start_loss = ops.cross_entropy(start_logits, start, ignore_index=ignored)
            end_loss = ops.cross_entropy(end_logits, end, ignore_index=ignored)
            loss = np.float32((start_loss + end_loss) / 2)
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                            hidden_states=out.hidden_states, attentions=out.attentions)


# ---- double heads: language model + multiple choice -------------------------------------------------

class GPT2DoubleHeadsModel(GPT2WithHead):
    """GPT-2 scoring several candidate continuations at once: the LM head (tied to wte) on every
    token, and a multiple-choice head giving one score per candidate.

    Inputs are [b, num_choices, t] (input_ids, attention_mask, token_type_ids, position_ids); each
    choice runs through the body as its own row. ``mc_token_ids`` [b, num_choices] says which token
    summarises each choice (typically an added [CLS] token at its end); None means the last
    position t - 1 of every choice, as in transformers, which is the last real token only without
    right padding (at a padding position the hidden state is not meaningful, and not transformers'
    either: with a mask, positions count real tokens here). Right-padded: pass mc_token_ids.

    Outputs: ``logits`` [b, num_choices, t, vocab_size], ``mc_logits`` [b, num_choices], ``loss``
    (LM loss for ``labels`` [b, num_choices, t], shifted inside, -100 ignored) and ``mc_loss``
    (cross-entropy for ``mc_labels`` [b], the index of the right choice).
    """

    def __init__(self, config, weights, backend="numba", source="weights"):
        # the body and the LM head (tied to wte, or lm_head.weight when untied) as GPT2LMHeadModel has them
        self.config = config
        self.transformer = GPT2Model(config, weights, backend=backend, source=source)
        self.lm_head = lm_head_params(config, weights, self.transformer, source)      # weight [v, c]
        _, heads = split_body_and_heads(weights)
        self.multiple_choice_head = GPT2SequenceSummary(config, heads, source)

    def state_dict(self):
        """{checkpoint name: array} of the body, plus "lm_head.weight" when it is not tied."""
        return {**self.transformer.state_dict(), **untied_lm_head(self)}

    def __call__(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                 position_ids=None, head_mask=None, inputs_embeds=None, mc_token_ids=None, labels=None,
                 mc_labels=None, use_cache=False, output_attentions=False, output_hidden_states=False):
        # -- [b, num_choices, ...] -> [b * num_choices, ...]: every choice is a row of its own
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            input_ids = as_array(input_ids, "input_ids")
            if input_ids.ndim != 3:
                raise ValueError(f"input_ids must be [batch, num_choices, seq], got shape {input_ids.shape}")
            b, n_choices, t = input_ids.shape
        else:
            inputs_embeds = as_array(inputs_embeds, "inputs_embeds")
            if inputs_embeds.ndim != 4:
                raise ValueError(f"inputs_embeds must be [batch, num_choices, seq, n_embd], got shape "
                                 f"{inputs_embeds.shape}")
            b, n_choices, t = inputs_embeds.shape[:3]
        rows = lambda a, name: _flatten_choices(a, name, b, n_choices)      # noqa: E731
        out = self.transformer(input_ids=rows(input_ids, "input_ids"), past_key_values=past_key_values,
                               attention_mask=rows(attention_mask, "attention_mask"),
                               token_type_ids=rows(token_type_ids, "token_type_ids"),
                               position_ids=rows(position_ids, "position_ids"), head_mask=head_mask,
                               inputs_embeds=rows(inputs_embeds, "inputs_embeds"), use_cache=use_cache,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        h = out.last_hidden_state                                          # [b * nc, t, c]
        logits = self.transformer.ops.linear(h, self.lm_head.weight.T, None)  # [b * nc, t, c] -> [b * nc, t, v]
        # [b * nc, ...] -> [b, nc, ...]
        choices = lambda a: a.reshape(b, n_choices, *a.shape[1:])          # noqa: E731
        mc_logits = self.multiple_choice_head(choices(h), mc_token_ids)     # [b, nc, t, c] -> [b, nc, k]
        if mc_logits.shape[-1] == 1:
            mc_logits = mc_logits[..., 0]                                   # one score per choice: [b, nc]

        loss = mc_loss = None
        if labels is not None:
            v = logits.shape[-1]
            labels = _class_ids(labels, "labels", v, (b, n_choices, t),
                                "[batch, num_choices, seq] as input_ids")
            # position i predicts token i + 1 of the same choice: drop the last logits and the first label
            loss = ops.cross_entropy(logits[:, :-1].reshape(-1, v), labels[..., 1:].reshape(-1))
        if mc_labels is not None:
            scores = mc_logits.reshape(-1, mc_logits.shape[-1])                # [b, nc]
            mc_labels = _class_ids(mc_labels, "mc_labels", scores.shape[-1], (len(scores),),
                                   f"the index of the right choice per row, [batch={len(scores)}]")
            mc_loss = ops.cross_entropy(scores, mc_labels)
        hidden_states = None if out.hidden_states is None else tuple(choices(x) for x in out.hidden_states)
        return GPT2DoubleHeadsModelOutput(loss=loss, mc_loss=mc_loss, logits=choices(logits),
                                          mc_logits=mc_logits, past_key_values=out.past_key_values,
                                          hidden_states=hidden_states, attentions=out.attentions)


class GPT2SequenceSummary:
    """One vector per choice from its hidden states, then an optional projection and activation:
    the multiple-choice head of GPT2DoubleHeadsModel, driven by the config's summary_* fields.

    - summary_type: "cls_index" (the token at mc_token_ids, default the last position), "last",
      "first", or "mean" (the mean over all t positions, padding included).
    - summary_use_proj: apply ``multiple_choice_head.summary`` (a linear layer with bias) to
      1 output (summary_proj_to_labels=True; transformers' double-heads model sets num_labels=1)
      or to n_embd outputs (summary_proj_to_labels=False).
    - summary_activation: None, or an activation name such as "tanh", applied after the projection.
    - summary_first_dropout / summary_last_dropout: training only, the identity here.

    transformers writes "last", "first" and "mean" as ``hidden[:, -1]``, ``hidden[:, 0]`` and
    ``hidden.mean(1)``, meant for 3-D [b, t, c] hidden states; in the double-heads model they are
    4-D [b, nc, t, c], so it indexes the choices instead of the tokens and returns mc_logits of
    shape [b, t]. Here they act on the tokens of each choice, as their names say.
    """

    SUMMARY_TYPES = ("cls_index", "last", "first", "mean")

    def __init__(self, config, heads, source="weights"):
        self.summary_type = config.summary_type
        if self.summary_type not in self.SUMMARY_TYPES:
            raise ValueError(f"config.summary_type must be one of {self.SUMMARY_TYPES}, got "
                             f"{self.summary_type!r} (transformers does not implement 'attn' either)")
        self.proj = None
        if config.summary_use_proj:
            n_out = 1 if config.summary_proj_to_labels else config.n_embd
            what = "[1, n_embd] (summary_proj_to_labels=True)" if config.summary_proj_to_labels else \
                "[n_embd, n_embd] (summary_proj_to_labels=False)"
            name = "GPT2DoubleHeadsModel"
            self.proj = (
                _head_tensor(heads, "multiple_choice_head.summary.weight", (n_out, config.n_embd), what,
                             source, name),
                _head_tensor(heads, "multiple_choice_head.summary.bias", (n_out,), f"[{n_out}]", source,
                             name))
        activation = config.summary_activation
        if activation and activation not in ops.ACTIVATIONS:
            raise ValueError(f"config.summary_activation must be None or one of {sorted(ops.ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation = ops.ACTIVATIONS[activation] if activation else None

    def __call__(self, hidden, cls_index=None):
        """hidden [b, nc, t, c], cls_index [b, nc] or None -> [b, nc, k] (k = 1 or n_embd)."""
        b, n_choices, t, _ = hidden.shape
        if self.summary_type == "last":
            x = hidden[:, :, -1]                                           # [b, nc, c]
        elif self.summary_type == "first":
            x = hidden[:, :, 0]                                            # [b, nc, c]
        elif self.summary_type == "mean":
            x = hidden.mean(axis=2)                                        # [b, nc, t, c] -> [b, nc, c]
        else:
            if cls_index is None:
                cls_index = np.full((b, n_choices), t - 1)
            cls_index = _class_ids(cls_index, "mc_token_ids", t, (b, n_choices),
                                   "[batch, num_choices], token positions", ignore_index=None)
            x = np.take_along_axis(hidden, cls_index[:, :, None, None], axis=2)[:, :, 0]   # [b, nc, c]
        if self.proj is not None:
            weight, bias = self.proj
            x = ops.linear(x, weight.T, bias)                              # [b, nc, c] -> [b, nc, k]
        if self.activation is not None:
            x = self.activation(x)
        return x.astype(np.float32, copy=False)


# ---- losses that ops.py does not have ----------------------------------------------------------------

def mse_loss(prediction, target):
    """Mean squared error, summed in float64; float32 scalar."""
    diff = np.asarray(prediction, np.float64) - np.asarray(target, np.float64)
    return np.float32(np.mean(diff * diff))


def bce_with_logits_loss(logits, target):
    """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1], float32 scalar.

    -[y log s(x) + (1 - y) log(1 - s(x))] = max(x, 0) - x y + log(1 + exp(-|x|)), the form that
    cannot overflow for large |x|.
    """
    x, y = np.asarray(logits, np.float64), np.asarray(target, np.float64)
    return np.float32(np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))))


# ---- checks: every bad input or tensor is a ValueError that names it -------------------------------

def _head_tensor(heads, name, shape, layout, source, model_name):
    """The head tensor ``name`` as float32, checked against ``shape`` (``layout`` names its axes)."""
    if name not in heads:
        found = ", ".join(sorted(heads)) or "none"
        raise ValueError(f"{source}: missing tensor {name!r} (expected shape {list(shape)} = {layout}) "
                         f"that {model_name} needs; head tensors in the checkpoint: {found}. Was it saved "
                         f"from another class?")
    array = np.asarray(heads[name], np.float32)
    if array.shape != tuple(shape):
        raise ValueError(f"{source}: tensor {name!r} has shape {list(array.shape)}, expected "
                         f"{list(shape)} = {layout} from the config (num_labels = len(config.id2label))")
    return array


def _class_ids(ids, name, n_classes, shape, what, ignore_index=IGNORE_INDEX):
    """Integer class indices of the given shape, each in 0..n_classes-1 or ignore_index (-100;
    None: every index must be a class); int64."""
    ids = as_array(ids, name)
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integers ({what}), got dtype {ids.dtype}")
    if ids.shape == (*shape, 1):
        ids = ids[..., 0]                   # e.g. [b, 1] for [b], as transformers' view(-1) allows
    if ids.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}), got {ids.shape}")
    bad = ((ids < 0) | (ids >= n_classes)) & (ids != ignore_index if ignore_index is not None else True)
    if bad.any():
        ignored = "" if ignore_index is None else f" or {ignore_index} (ignored)"
        raise ValueError(f"{name} must be in 0..{n_classes - 1}{ignored}, got "
                         f"{ids[bad][0]} at {tuple(int(p) for p in np.argwhere(bad)[0])}")
    return ids.astype(np.int64)


def _float_labels(labels, name):
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"{name} must be numbers, got dtype {labels.dtype}")
    return labels.astype(np.float64)


def _span_positions(positions, name, b):
    """[b] or [b, 1] integer token positions -> [b] int64 (any value; the caller clamps)."""
    positions = as_array(positions, name)
    if positions.ndim == 2 and positions.shape[1] == 1:
        positions = positions[:, 0]
    if not np.issubdtype(positions.dtype, np.integer) or positions.dtype == bool or positions.shape != (b,):
        raise ValueError(f"{name} must be integers of shape ({b},) or ({b}, 1), got {positions.dtype} "
                         f"{np.shape(positions)}")
    return positions.astype(np.int64)


def _flatten_choices(array, name, b, n_choices):
    """[b, nc, ...] -> [b * nc, ...]; None stays None."""
    if array is None:
        return None
    array = as_array(array, name)
    if array.shape[:2] != (b, n_choices) or array.ndim < 3:
        raise ValueError(f"{name} must be [batch={b}, num_choices={n_choices}, ...] like input_ids, "
                         f"got shape {array.shape}")
    return array.reshape(b * n_choices, *array.shape[2:])
