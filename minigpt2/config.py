"""GPT2Config: the hyper-parameters of a GPT-2 model, with Hugging Face's field names and defaults.

    cfg = GPT2Config.from_pretrained("path/to/folder")   # reads folder/config.json
    cfg.n_embd, cfg.hidden_size                          # the same field, HF alias
    cfg.save_pretrained("out/")                          # writes out/config.json

Unknown keys in a config.json (``architectures``, ``task_specific_params``, ...) are kept and
written back unchanged; they never make loading fail.
"""

import copy
import json
import os
from dataclasses import MISSING, dataclass, field, fields

CONFIG_NAME = "config.json"
# num_labels builds one name per label and a classification head one row per label: a bound keeps
# a config.json from asking for a billion of them (ImageNet-22k, among the largest label sets, has 21,843)
MAX_NUM_LABELS = 100_000

# HF alias -> our field (transformers' GPT2Config.attribute_map; n_ctx is the pre-v5 name).
ALIASES = {
    "hidden_size": "n_embd",
    "max_position_embeddings": "n_positions",
    "num_attention_heads": "n_head",
    "num_hidden_layers": "n_layer",
    "n_ctx": "n_positions",
}


@dataclass
class GPT2Config:
    """GPT-2 hyper-parameters. Field names and defaults are those of transformers' GPT2Config."""

    vocab_size: int = 50257
    n_positions: int = 1024            # context length: rows of wpe
    n_embd: int = 768                  # width of the residual stream
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None         # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1           # dropouts: kept for round trips, unused at inference
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"    # summary_*: the multiple-choice head of GPT2DoubleHeadsModel
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    scale_attn_weights: bool = True    # divide attention scores by sqrt(head_dim)
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list | None = 50256
    pad_token_id: int | None = None
    scale_attn_by_inverse_layer_idx: bool = False   # also divide scores by (layer_idx + 1)
    reorder_and_upcast_attn: bool = False           # only matters under mixed precision
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    # Classification heads: label names, as transformers keeps them. num_labels = len(id2label).
    id2label: dict = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    label2id: dict = field(default_factory=lambda: {"LABEL_0": 0, "LABEL_1": 1})
    # Sequence-classification loss: "regression", "single_label_classification",
    # "multi_label_classification", or None to choose from num_labels and the labels' dtype.
    problem_type: str | None = None
    model_type: str = "gpt2"
    # Every other key read from a config.json, kept verbatim so that writing it back loses nothing.
    extra: dict = field(default_factory=dict, repr=False)

    def __init__(self, **kwargs):
        """Build from keyword arguments; HF aliases (hidden_size, ...) and unknown keys are accepted."""
        kwargs = dict(kwargs)
        extra = dict(kwargs.pop("extra", None) or {})
        num_labels = kwargs.pop("num_labels", None)
        for alias, name in ALIASES.items():
            if alias in kwargs:
                value = kwargs.pop(alias)
                if name in kwargs:
                    extra[alias] = value          # e.g. an old n_ctx next to n_positions: keep it
                else:
                    kwargs[name] = value
        known = {f.name: f for f in fields(self) if f.name != "extra"}
        for name, f in known.items():
            if name in kwargs:
                value = kwargs.pop(name)
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                value = f.default
            setattr(self, name, value)
        extra.update(kwargs)                      # what is left is unknown to us
        self.extra = extra
        self._check_labels()
        # JSON object keys are strings; labels are looked up by int.
        self.id2label = {int(k): v for k, v in self.id2label.items()}
        self.label2id = {k: int(v) for k, v in self.label2id.items()}
        if num_labels is not None and num_labels != len(self.id2label):
            self.num_labels = num_labels
        self._validate()

    def _check_labels(self):
        """id2label {int or digit string: str}, label2id {str: int}, at most MAX_NUM_LABELS each."""
        for name, keys_are_ids in (("id2label", True), ("label2id", False)):
            labels = getattr(self, name)
            if not isinstance(labels, dict):
                raise ValueError(f"GPT2Config.{name} must be a JSON object (a dict), got {type(labels).__name__}")
            if len(labels) > MAX_NUM_LABELS:
                raise ValueError(f"GPT2Config.{name} has {len(labels)} labels, more than {MAX_NUM_LABELS}")
            for key, value in labels.items():
                label_id, label = (key, value) if keys_are_ids else (value, key)
                if not (is_int(label_id) or (isinstance(label_id, str) and label_id.strip().lstrip("-").isdigit()
                                             and len(label_id) < 20)):
                    raise ValueError(f"GPT2Config.{name}: label id {label_id!r} is not an integer")
                if not isinstance(label, str):
                    raise ValueError(f"GPT2Config.{name}: label {label!r} is not a string")

    def _validate(self):
        if not isinstance(self.activation_function, str):
            raise ValueError(f"GPT2Config.activation_function must be a string such as 'gelu_new', "
                             f"got {self.activation_function!r}")
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPT2Config.{name} must be a positive int, got {value!r}")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ValueError(f"GPT2Config.n_inner must be None or a positive int, got {self.n_inner!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPT2Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        eps = self.layer_norm_epsilon
        # a negative or NaN eps makes layer_norm divide by sqrt(<= 0): NaN logits, no error
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
            raise ValueError(f"GPT2Config.layer_norm_epsilon must be a finite number >= 0, got {eps!r}")

    # ---- derived values and HF aliases -------------------------------------------------------
    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @property
    def inner_dim(self):
        """The MLP width actually used: n_inner, or 4 * n_embd when n_inner is None."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def num_labels(self):
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n):
        """As transformers: setting num_labels resets the label names to LABEL_0..LABEL_{n-1}."""
        if not is_int(n) or n < 0:
            raise ValueError(f"GPT2Config.num_labels must be an int >= 0, got {n!r}")
        if n > MAX_NUM_LABELS:
            raise ValueError(f"GPT2Config.num_labels {n} is more than the {MAX_NUM_LABELS} labels minigpt2 "
                             f"builds names for; is this config.json damaged?")
        self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        self.label2id = {v: k for k, v in self.id2label.items()}

    hidden_size = property(lambda self: self.n_embd)
    max_position_embeddings = property(lambda self: self.n_positions)
    num_attention_heads = property(lambda self: self.n_head)
    num_hidden_layers = property(lambda self: self.n_layer)
    n_ctx = property(lambda self: self.n_positions)

    def __getattr__(self, name):
        # Only called when normal lookup fails: expose unknown config.json keys as attributes.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"GPT2Config has no attribute {name!r}")

    # ---- dict / JSON ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f"GPT2Config.from_dict needs a dict of config fields, got {type(d).__name__}")
        return cls(**d)

    def to_dict(self):
        """All fields plus the unknown keys, as plain JSON-able values (label ids as str keys)."""
        d = dict(copy.deepcopy(self.extra))
        for f in fields(self):
            if f.name != "extra":
                d[f.name] = copy.deepcopy(getattr(self, f.name))
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return dict(sorted(d.items()))

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        except IsADirectoryError:
            raise ValueError(f"{path} is a folder; pass the config.json inside it, or use "
                             "GPT2Config.from_pretrained(folder)") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_json_file(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_pretrained(cls, name_or_folder, **kwargs):
        """Read ``config.json`` from a folder, or return the preset of an official model name.

        ``kwargs`` override fields after loading (as in transformers).
        """
        folder = str(name_or_folder)
        if os.path.isdir(folder):
            path = os.path.join(folder, CONFIG_NAME)
            if not os.path.isfile(path):
                raise ValueError(f"{folder}: no {CONFIG_NAME} in this folder")
            config = cls.from_json_file(path)
        elif os.path.isfile(folder) and folder.endswith(".json"):
            config = cls.from_json_file(folder)
        elif folder in PRESETS or _is_repo_id_of_preset(folder):
            config = cls(**PRESETS[folder.split("/")[-1]])
        else:
            raise ValueError(
                f"{name_or_folder!r} is neither a folder with {CONFIG_NAME} nor one of the presets "
                f"{sorted(PRESETS)}")
        if kwargs:
            config = cls(**{**config.to_dict(), **kwargs})
        return config

    def save_pretrained(self, folder):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"{folder} is a file; save_pretrained needs a folder to write {CONFIG_NAME} into")
        os.makedirs(folder, exist_ok=True)
        self.to_json_file(os.path.join(folder, CONFIG_NAME))


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_repo_id_of_preset(name):
    """'openai-community/gpt2' -> True; a path such as './models/gpt2' (a folder that does not exist,
    maybe a typo) -> False, so it is an error rather than the preset's config."""
    owner, _, model = name.partition("/")
    return bool(owner) and model in PRESETS and not owner.startswith((".", "~")) and "/" not in model


# The five official checkpoints (same numbers as their config.json on the Hugging Face hub).
PRESETS = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12),                # 124M
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),        # 355M
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),         # 774M
    "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25),            # 1558M
    "distilgpt2": dict(n_embd=768, n_layer=6, n_head=12),           # 82M
}
