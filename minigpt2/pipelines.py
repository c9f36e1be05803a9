"""`minigpt2.pipeline("text-generation", model=...)`: transformers' text-generation pipeline for its
common arguments.

    generator = minigpt2.pipeline("text-generation", model="gpt2")
    generator("Hello, I'm a language model,", max_new_tokens=30, num_return_sequences=2, do_sample=True)
    # [{"generated_text": "Hello, I'm a language model, ..."}, {...}]

As transformers: the new tokens are decoded without special tokens and appended to the prompt
text (return_full_text=False: the new text alone); a list of prompts gives a list of such lists.
The pipeline's own defaults (PIPELINE_DEFAULTS: 256 new tokens, sampling at temperature 0.7) fill
in what neither the call nor the model's generation_config.json sets; temperature only when sampling.
"""

from minigpt2.generation_config import GenerationConfig
from minigpt2.model import GPT2LMHeadModel
from minigpt2.tokenizer import GPT2Tokenizer

TASKS = ("text-generation",)
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}   # transformers' own
SAMPLING_SETTINGS = {"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"}


def pipeline(task, model="gpt2", tokenizer=None, backend="numba", **generate_defaults):
    """A TextGenerationPipeline. model: a name, a folder, or a loaded GPT2LMHeadModel (then pass
    tokenizer= too, or it is read from the same name); generate_defaults apply to every call."""
    if task not in TASKS:
        raise ValueError(f"pipeline task must be one of {TASKS}, got {task!r}")
    if isinstance(model, GPT2LMHeadModel):
        if tokenizer is None:
            raise ValueError("pipeline(model=<a loaded model>) needs tokenizer= (a GPT2Tokenizer or a name)")
    else:
        tokenizer = model if tokenizer is None else tokenizer
        model = GPT2LMHeadModel.from_pretrained(model, backend=backend)
    if not isinstance(tokenizer, GPT2Tokenizer):
        tokenizer = GPT2Tokenizer.from_pretrained(tokenizer)
    return TextGenerationPipeline(model, tokenizer, generate_defaults)


class TextGenerationPipeline:
    """Text in, [{"generated_text": ...}] out, through `model.generate`."""

    def __init__(self, model, tokenizer, generate_defaults=None):
        self.model, self.tokenizer = model, tokenizer
        self.generate_defaults = dict(generate_defaults or {})

    def __call__(self, text_inputs, return_full_text=True, **generate_kwargs):
        if isinstance(text_inputs, str):
            return self.generate_one(text_inputs, return_full_text, generate_kwargs)
        if not isinstance(text_inputs, (list, tuple)) or not all(isinstance(t, str) for t in text_inputs):
            raise ValueError(f"text-generation takes a string or a list of strings, got {text_inputs!r}")
        return [self.generate_one(text, return_full_text, generate_kwargs) for text in text_inputs]

    def generate_one(self, text, return_full_text, generate_kwargs):
        ids = self.tokenizer.encode(text) or [self.tokenizer.eos_token_id]
        sequences = self.model.generate([ids], **self.generate_kwargs(generate_kwargs))
        prefix = text if return_full_text else ""
        return [{"generated_text": prefix + self.tokenizer.decode(row[len(ids):].tolist(), skip_special_tokens=True)}
                for row in sequences]

    def generate_kwargs(self, call_kwargs):
        """The call's settings over those given at construction, plus PIPELINE_DEFAULTS for what
        neither they nor the model's generation_config.json set (transformers' rule)."""
        kwargs = {**self.generate_defaults, **call_kwargs}
        model_config = getattr(self.model, "generation_config", None)
        from_file = {} if model_config is None else {k for k, v in model_config.to_dict().items()
                                                     if v != getattr(GenerationConfig(), k, None)}
        is_set = set(kwargs) | set(from_file)
        added = {k: v for k, v in PIPELINE_DEFAULTS.items()
                 if k not in is_set and not (k == "max_new_tokens" and "max_length" in is_set)}
        sampling = {**added, **kwargs}.get("do_sample", model_config.do_sample if model_config else False)
        if not sampling:
            added = {k: v for k, v in added.items() if k not in SAMPLING_SETTINGS}
        return {**kwargs, **added}
