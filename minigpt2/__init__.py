"""minigpt2: GPT-2 in NumPy and Numba, with the names of Hugging Face transformers.

    from minigpt2 import GPT2Tokenizer, GPT2LMHeadModel
    tok = GPT2Tokenizer.from_pretrained("gpt2")
    model = GPT2LMHeadModel.from_pretrained("gpt2")
    ids = tok("Hello, my dog is cute", return_tensors="np")["input_ids"]
    print(tok.decode(model.generate(ids, max_new_tokens=20)[0]))

The public names are imported on first use, so `import minigpt2` stays fast:
the tokenizer alone never pays for importing Numba.
"""

import importlib
import importlib.util

from minigpt2.version import __version__  # noqa: F401  (minigpt2.__version__)

# public name -> module that defines it
_PUBLIC_NAMES = {
    "GPT2Config": "minigpt2.config",
    "GPT2Tokenizer": "minigpt2.tokenizer",
    "GPT2TokenizerFast": "minigpt2.tokenizer",
    "GenerationConfig": "minigpt2.generation_config",
    "pipeline": "minigpt2.pipelines",
    "GPT2Model": "minigpt2.model",
    "GPT2LMHeadModel": "minigpt2.model",
    "GPT2DoubleHeadsModel": "minigpt2.heads",
    "GPT2ForSequenceClassification": "minigpt2.heads",
    "GPT2ForTokenClassification": "minigpt2.heads",
    "GPT2ForQuestionAnswering": "minigpt2.heads",
    "KVCache": "minigpt2.cache",
    "set_float32_matmul_precision": "minigpt2.engine",
    "get_float32_matmul_precision": "minigpt2.engine",
    "set_int8_compute": "minigpt2.engine",
    "get_int8_compute": "minigpt2.engine",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name):
    if name in _PUBLIC_NAMES:
        return getattr(importlib.import_module(_PUBLIC_NAMES[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"minigpt2.{name}") is not None:
        # a submodule on first use: `import minigpt2; minigpt2.engine.amx.available()`
        return importlib.import_module(f"minigpt2.{name}")
    raise AttributeError(f"module 'minigpt2' has no attribute {name!r}")
