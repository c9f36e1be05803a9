"""GenerationConfig: the settings of `generate`, with transformers' names and defaults, checked once.

    config = GenerationConfig.from_pretrained("model-folder")   # generation_config.json, if any
    config = resolve_config(model, prompt_length, num_beams=4, max_new_tokens=30)

`resolve_config` is the one checker at the boundary of `generate`: it starts from the model's
defaults (its generation_config.json, else its config's bos/eos ids, as transformers does), applies
the caller's arguments, checks every value (a bad one is a ValueError that says what to pass)
and normalises them (eos ids as a list, max_length as max_new_tokens, ...), so the loops below
read the settings without checking them again. `check_prompt` does the same for the ids and mask.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from minigpt2 import inputs
from minigpt2.inputs import is_int, is_number

CONFIG_NAME = "generation_config.json"


@dataclass
class GenerationConfig:
    """transformers' GenerationConfig fields that minigpt2 implements, with transformers' defaults."""
    max_length: int = None                # prompt + new tokens; max_new_tokens wins; neither: 20 new tokens
    max_new_tokens: int = None
    min_length: int = 0
    min_new_tokens: int = None
    early_stopping: object = False        # beams: True, False or "never"
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float = None
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list = None
    sequence_bias: object = None          # {tuple of ids: bias} or [[ids, bias], ...]
    suppress_tokens: list = None
    begin_suppress_tokens: list = None
    forced_bos_token_id: int = None
    forced_eos_token_id: object = None
    exponential_decay_length_penalty: tuple = None   # (start after n new tokens, factor)
    renormalize_logits: bool = False
    num_return_sequences: int = 1
    output_scores: bool = False
    output_logits: bool = False
    return_dict_in_generate: bool = False
    pad_token_id: int = None
    bos_token_id: int = None
    eos_token_id: object = None
    extra: dict = field(default_factory=dict, repr=False)   # fields of the file minigpt2 does not use

    @property
    def eos_token_ids(self):
        """eos_token_id as a list (empty: no EOS)."""
        return [] if self.eos_token_id is None else list(np.atleast_1d(self.eos_token_id).tolist())

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)} - {"extra"}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.extra = {k: v for k, v in values.items() if k not in known}
        return config

    def to_dict(self):
        values = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {**self.extra, **values}

    @classmethod
    def from_pretrained(cls, folder):
        """Read folder/generation_config.json (a missing file is an error; see `for_model`)."""
        path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{path} does not exist: this folder has no generation defaults "
                             "(GenerationConfig() gives transformers' defaults)")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save_pretrained(self, folder):
        """Write folder/generation_config.json (only the fields that differ from the defaults, as transformers)."""
        os.makedirs(folder, exist_ok=True)
        defaults = GenerationConfig().to_dict()
        values = {k: v for k, v in self.to_dict().items() if defaults.get(k, object()) != v}
        if isinstance(values.get("sequence_bias"), dict):        # JSON keys cannot be tuples
            values["sequence_bias"] = [[list(k), v] for k, v in values["sequence_bias"].items()]
        with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(values, f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def for_folder(cls, folder, model_config):
        """A model folder's defaults: its generation_config.json if there is one, else `for_model`."""
        if os.path.isfile(os.path.join(folder, CONFIG_NAME)):
            return cls.from_pretrained(folder)
        return cls.for_model(model_config)

    @classmethod
    def for_model(cls, model_config):
        """Defaults for a model without generation_config.json: its config's bos/eos/pad ids."""
        return cls(bos_token_id=getattr(model_config, "bos_token_id", None),
                   eos_token_id=getattr(model_config, "eos_token_id", None),
                   pad_token_id=getattr(model_config, "pad_token_id", None))


def resolve_config(model, prompt_length, generation_config=None, **kwargs):
    """The checked settings of one `generate` call: the model's defaults, then generation_config,
    then the keyword arguments (an argument given as None overrides too, e.g. eos_token_id=None)."""
    base = generation_config or getattr(model, "generation_config", None) or GenerationConfig.for_model(model.config)
    unknown = set(kwargs) - {f.name for f in fields(GenerationConfig) if f.name != "extra"}
    if unknown:
        raise ValueError(f"generate got unknown arguments {sorted(unknown)}; generation settings are "
                         f"{sorted(f.name for f in fields(GenerationConfig) if f.name != 'extra')}")
    config = GenerationConfig.from_dict({**base.to_dict(), **kwargs})
    check_config(config, model.config.vocab_size)
    if config.max_new_tokens is None:
        # transformers: when nobody set max_length, 20 new tokens
        config.max_new_tokens = 20 if config.max_length is None else config.max_length - prompt_length
        if config.max_new_tokens < 0:
            raise ValueError(f"max_length ({config.max_length}) is below the prompt length ({prompt_length}): "
                             "pass a larger max_length, or max_new_tokens")
    config.max_length = prompt_length + config.max_new_tokens
    if config.pad_token_id is None:
        config.pad_token_id = config.eos_token_ids[0] if config.eos_token_ids else 0   # as transformers
    if config.temperature == 0:
        config.do_sample = False                           # temperature 0 means greedy
    return config


def check_config(config, vocab_size):
    """Every setting in range; bad values are ValueErrors that say what to pass. Normalises in place."""
    c = config
    for name in ("max_new_tokens", "min_new_tokens", "max_length", "min_length", "top_k", "no_repeat_ngram_size"):
        value = getattr(c, name)
        if value is not None and (not is_int(value) or value < 0):
            raise ValueError(f"{name} must be an integer >= 0 (or None), got {value!r}")
    for name in ("num_beams", "num_return_sequences"):
        if not is_int(getattr(c, name)) or getattr(c, name) < 1:
            raise ValueError(f"{name} must be an integer >= 1 (1 = off), got {getattr(c, name)!r}")
    if c.num_return_sequences > c.num_beams and (c.num_beams > 1 or not c.do_sample):   # sampling: any number
        raise ValueError(f"num_return_sequences ({c.num_return_sequences}) must be <= num_beams ({c.num_beams}): "
                         "pass num_beams >= num_return_sequences"
                         + ("" if c.num_beams > 1 else ", or do_sample=True for several samples"))
    if c.early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {c.early_stopping!r}")
    checks = [("temperature", c.temperature, lambda v: v >= 0, ">= 0 (0 = greedy)"),
              ("top_p", c.top_p, lambda v: 0 <= v <= 1, "in [0, 1]"),
              ("typical_p", c.typical_p, lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
              ("epsilon_cutoff", c.epsilon_cutoff, lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
              ("eta_cutoff", c.eta_cutoff, lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
              ("repetition_penalty", c.repetition_penalty, lambda v: v > 0, "> 0"),
              ("length_penalty", c.length_penalty, np.isfinite, "a finite number")]
    if c.min_p is not None:
        checks.append(("min_p", c.min_p, lambda v: 0 <= v <= 1, "in [0, 1] (None = off)"))
    for name, value, ok, what in checks:
        if not is_number(value) or not ok(value):        # NaN fails every comparison
            raise ValueError(f"{name} must be {what}, got {value!r}")
    if c.eos_token_id is not None:       # an EOS past the vocabulary is allowed (it never comes)
        c.eos_token_id = token_id_list("eos_token_id", c.eos_token_id, None) or None
    if c.pad_token_id is not None:
        c.pad_token_id = token_id_list("pad_token_id", c.pad_token_id, vocab_size, single=True)[0]
    if c.forced_bos_token_id is not None:
        c.forced_bos_token_id = token_id_list("forced_bos_token_id", c.forced_bos_token_id, vocab_size, single=True)[0]
    if c.forced_eos_token_id is not None:
        c.forced_eos_token_id = token_id_list("forced_eos_token_id", c.forced_eos_token_id, vocab_size)
    for name in ("suppress_tokens", "begin_suppress_tokens"):
        if getattr(c, name) is not None:
            setattr(c, name, token_id_list(name, getattr(c, name), vocab_size))
    if c.bad_words_ids is not None:
        c.bad_words_ids = id_sequences("bad_words_ids", c.bad_words_ids, vocab_size)
    if c.sequence_bias is not None:
        pairs = c.sequence_bias.items() if isinstance(c.sequence_bias, dict) else c.sequence_bias
        try:
            ids, biases = zip(*pairs) if pairs else ((), ())
        except (TypeError, ValueError):
            raise ValueError("sequence_bias must be {tuple of token ids: float} or [[ids, float], ...], "
                             f"got {c.sequence_bias!r}") from None
        if not all(is_number(b) for b in biases):
            raise ValueError(f"sequence_bias: every bias must be a number, got {list(biases)!r}")
        c.sequence_bias = dict(zip(map(tuple, id_sequences("sequence_bias", list(ids), vocab_size)), map(float, biases)))
    if c.exponential_decay_length_penalty is not None:
        value = c.exponential_decay_length_penalty
        if (not isinstance(value, (tuple, list)) or len(value) != 2 or not is_int(value[0]) or value[0] < 0
                or not is_number(value[1]) or not value[1] > 0):
            raise ValueError("exponential_decay_length_penalty must be (start, factor): start an integer >= 0 "
                             f"(new tokens), factor > 0 (> 1 makes EOS likelier), got {value!r}")
        c.exponential_decay_length_penalty = (int(value[0]), float(value[1]))


def id_sequences(name, value, vocab_size):
    """A list of non-empty lists of token ids, each id in 0..vocab_size-1."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of token-id lists, e.g. [[318], [2060, 10]], got {value!r}")
    sequences = []
    for sequence in value:
        if not isinstance(sequence, (list, tuple, np.ndarray)) or len(sequence) == 0:
            raise ValueError(f"{name}: each entry must be a non-empty list of token ids (length >= 1), "
                             f"got {sequence!r}")
        sequences.append(token_id_list(name, list(sequence), vocab_size))
    return sequences


def token_id_list(name, value, vocab_size, single=False):
    """An id or a list of ids, each in 0..vocab_size-1 (None: >= 0) -> list of ints (2.7 is not an id)."""
    values = np.atleast_1d(np.asarray(value))
    if (values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)) or values.dtype == bool
            or (values < 0).any() or (vocab_size and (values >= vocab_size).any()) or (single and values.size != 1)):
        if single:
            raise ValueError(f"{name} must be one id in [0, {vocab_size}) (vocab_size of the model), got {value!r}")
        bounds = f"in [0, {vocab_size}) (vocab_size of the model)" if vocab_size else ">= 0"
        raise ValueError(f"{name} must be a token id {bounds} or a list of them, got {value!r}")
    return [int(v) for v in values]


def check_prompt(input_ids, attention_mask, vocab_size):
    """input_ids [batch, seq] int64 (one list = one row) and its 0/1 left-padding mask, checked."""
    if isinstance(input_ids, dict):     # e.g. generate(model, tokenizer(text)): the whole BatchEncoding
        raise ValueError(f"input_ids got a dict (keys {sorted(input_ids)}); pass its arrays by name: "
                         "model.generate(**encoding) or input_ids=encoding['input_ids']")
    if np.size(inputs.as_array(input_ids, "input_ids")) == 0:
        raise ValueError("input_ids is empty: give at least one token (e.g. <|endoftext|> = 50256)")
    input_ids = inputs.token_ids(input_ids, "input_ids", vocab_size)
    if attention_mask is None:
        return input_ids, np.ones_like(input_ids)
    mask = inputs.attention_mask_2d(attention_mask, *input_ids.shape).astype(np.int64)
    if not np.all(mask[:, -1] == 1) or np.any(np.diff(mask, axis=-1) < 0):
        raise ValueError("attention_mask: generation needs left padding (zeros first, then ones, "
                         "last column all ones); pad prompts on the left")
    return input_ids, mask
