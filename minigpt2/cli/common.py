"""What the commands share: the --model / --dtype arguments, loading a model (with the offline
fallback to the bundled demo model), command-line escapes, and a reader leaving the pipe."""

import sys

DEFAULT_MODEL = "gpt2"
FALLBACK_MODEL = "tiny-shakespeare"   # bundled with the package: runs when gpt2 cannot be had


def model_folder(name):
    """The folder of --model NAME; with no --model, gpt2 (cached or downloaded), else the bundled
    demo model, with one line on stderr saying why."""
    from minigpt2.weights import hub

    if name is not None:
        return hub.resolve_model_folder(name)
    try:
        return hub.resolve_model_folder(DEFAULT_MODEL)
    except hub.HubError as error:
        try:
            folder = hub.resolve_model_folder(FALLBACK_MODEL, local_files_only=True)
        except (hub.HubError, ValueError):
            raise error from None
        print(f"minigpt2: {DEFAULT_MODEL} is not available ({error}); running the bundled demo "
              f"model {FALLBACK_MODEL!r} instead", file=sys.stderr)
        return folder


def load(name, backend="numba", dtype="auto", matmul_precision="highest"):
    """(model, tokenizer, folder) for --model NAME, weights stored as --dtype; the numba kernels set
    to --matmul-precision."""
    from minigpt2.model import GPT2LMHeadModel
    from minigpt2.tokenizer import GPT2Tokenizer

    if matmul_precision != "highest":
        from minigpt2 import engine
        engine.set_float32_matmul_precision(matmul_precision)
    folder = model_folder(name)
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend, dtype=dtype)
    tokenizer = GPT2Tokenizer.from_pretrained(folder)
    if len(tokenizer) > model.config.vocab_size:
        # else the first id past the model's vocabulary fails deep in the run, naming no file
        raise ValueError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}; put the model's own vocab.json and merges.txt in the folder")
    return model, tokenizer, folder


def unescape(text):
    """'\\n' typed on a command line -> a newline (also \\t and \\\\); other text is kept as is."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def add_model_arguments(parser):
    parser.add_argument("--model", default=None, metavar="NAME_OR_FOLDER",
                        help=f"a model name (gpt2, gpt2-medium, ..., {FALLBACK_MODEL}) or a folder with "
                             f"config.json + model.safetensors (default: {DEFAULT_MODEL}, downloaded on first "
                             f"use; offline: the bundled {FALLBACK_MODEL})")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                        help="numba: the fast kernels (default); numpy: the plain reference ops")


STORAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")   # minigpt2.quantize.DTYPES, without importing it


def add_dtype_argument(parser):
    parser.add_argument("--dtype", default="auto", choices=STORAGE_DTYPES + ("auto",),
                        help="how the weights are stored, converted once at load (computing stays float32): "
                             "bfloat16 / float16 half the bytes, int8 a quarter; faster decoding, slightly "
                             "different logits (default: auto = as stored: float32, or the type of a folder "
                             "written by `minigpt2 convert`)")
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high", "medium"),
                        help="medium: the prompt's matmuls and attention use bfloat16 products on AMX tiles "
                             "where the CPU has them (faster, logits move as with bfloat16 weights); decode "
                             "steps stay float32 (default: highest = float32 products)")
