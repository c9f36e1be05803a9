"""What the models return: dataclasses with transformers' field names, holding NumPy arrays.

    out = model(ids, output_hidden_states=True)
    out.logits, out["logits"], out.hidden_states[-1]
"""

from dataclasses import dataclass, fields


class ModelOutput:
    """Attribute access plus ``out["name"]`` and ``to_tuple()`` (the fields that are not None)."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self):
        return tuple(getattr(self, name) for name in self.keys())


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    """GPT2Model's output."""
    last_hidden_state: object = None   # [b, t, c] float32, after ln_f
    past_key_values: object = None     # KVCache when use_cache=True
    hidden_states: tuple = None        # n_layer + 1 arrays [b, t, c]: embeddings, block inputs, ln_f output
    attentions: tuple = None           # n_layer arrays [b, h, t, s]


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    """GPT2LMHeadModel's output."""
    loss: object = None                # float32 scalar when labels were given
    logits: object = None              # [b, t, vocab_size] float32
    past_key_values: object = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    """GPT2ForSequenceClassification's output."""
    loss: object = None                # float32 scalar when labels were given
    logits: object = None              # [b, num_labels] float32, at each row's last real token
    past_key_values: object = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    """GPT2ForTokenClassification's output."""
    loss: object = None                # float32 scalar when labels were given
    logits: object = None              # [b, t, num_labels] float32
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    """GPT2ForQuestionAnswering's output."""
    loss: object = None                # float32 scalar when start and end positions were given
    start_logits: object = None        # [b, t] float32
    end_logits: object = None          # [b, t] float32
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass
class GPT2DoubleHeadsModelOutput(ModelOutput):
    """GPT2DoubleHeadsModel's output."""
    loss: object = None                # language-modelling loss (labels), float32 scalar
    mc_loss: object = None             # multiple-choice loss (mc_labels), float32 scalar
    logits: object = None              # [b, num_choices, t, vocab_size] float32
    mc_logits: object = None           # [b, num_choices] float32 (one score per choice)
    past_key_values: object = None     # KVCache over the b * num_choices flattened rows
    hidden_states: tuple = None        # n_layer + 1 arrays [b, num_choices, t, c]
    attentions: tuple = None           # n_layer arrays [b * num_choices, h, t, s]


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """`generate(..., return_dict_in_generate=True)` without beams (greedy or sampling)."""
    sequences: object = None           # [rows, prompt + new] int64
    scores: tuple = None               # output_scores: one [rows, vocab] float32 per step, processed
    logits: tuple = None               # output_logits: one [rows, vocab] float32 per step, raw


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """`generate(..., num_beams=k, return_dict_in_generate=True)`."""
    sequences: object = None           # [batch * num_return_sequences, prompt + new] int64
    sequences_scores: object = None    # output_scores: [batch * num_return_sequences] float32, length-penalised
    scores: tuple = None               # output_scores: one [batch * num_beams, vocab] per step (processed log-probs)
    logits: tuple = None               # output_logits: one [batch * num_beams, vocab] per step, raw
    beam_indices: object = None        # [batch * num_return_sequences, new] int64: the beam row of each step (-1 past the end)
