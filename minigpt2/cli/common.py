"""What the commands share: the --model / --dtype arguments, loading a model (with the offline
fallback to the bundled demo model), command-line escapes, and a reader leaving the pipe."""

import os
import re
import sys
from pathlib import Path

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
        print(f"minigpt2: {DEFAULT_MODEL} not available ({short_reason(error)}); using the bundled demo "
              f"model {FALLBACK_MODEL}", file=sys.stderr)
        return folder


def short_reason(error, width=40):
    """The gist of why the default model could not be had, for a one-line note: the first short
    parenthesis of the hub's error ("Connection refused", "HF_HUB_OFFLINE=1"), else its start."""
    text = " ".join(str(error).split())
    found = re.search(r"\(([^()]{1,%d})\)" % width, text)
    if found:
        return found.group(1)
    return text if len(text) <= width else text[:width - 3] + "..."


def load(name, backend="numba", dtype="auto", matmul_precision="highest", int8_compute="float32"):
    """(model, tokenizer, folder) for --model NAME, weights stored as --dtype; the numba kernels set
    to --matmul-precision and --int8-compute."""
    from minigpt2.model import GPT2LMHeadModel
    from minigpt2.tokenizer import GPT2Tokenizer

    if matmul_precision != "highest" or int8_compute != "float32":
        from minigpt2 import engine
        engine.set_float32_matmul_precision(matmul_precision)
        engine.set_int8_compute(int8_compute)
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
    parser.add_argument("--int8-compute", default="float32", choices=("float32", "int8"),
                        help="with --dtype int8: int8 rounds each decode step's activations to int8 too (blocks "
                             "of 32) and multiplies in integers (VNNI / AVX2), as llama.cpp's q8_0 (default: "
                             "float32 activations)")


def read_utf8(path_or_stream, name):
    """The text of a file (or a binary stream such as sys.stdin.buffer); non-UTF-8 bytes are a
    ValueError "NAME is not UTF-8 text (invalid start byte at byte N)"."""
    if hasattr(path_or_stream, "read"):
        data = path_or_stream.read()
    else:
        with open(path_or_stream, "rb") as f:
            data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{name} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def stdin_text():
    """Standard input as text, its bytes decoded strictly (never a lone surrogate)."""
    return read_utf8(getattr(sys.stdin, "buffer", None) or sys.stdin, "standard input")


def kernel_cache_is_cold(engine_folder=None):
    """True when the first call will compile the engine's kernels (seconds), as far as a cheap
    look at Numba's on-disk cache can tell: no cache index (<module>.<function>-<line>.py3X.nbi
    in engine/__pycache__) for this Python at all, or a module newer than its own indexes (Numba
    then recompiles it). Modules without any index are not counted (amx.py compiles only where
    the CPU has AMX). Unknown (NUMBA_CACHE_DIR elsewhere, NUMBA_DISABLE_JIT): False."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.environ.get("NUMBA_DISABLE_JIT") == "1":
        return False
    folder = Path(engine_folder) if engine_folder else Path(__file__).resolve().parent.parent / "engine"
    tag = f".py{sys.version_info.major}{sys.version_info.minor}.nbi"
    indexes = list((folder / "__pycache__").glob(f"*{tag}")) if (folder / "__pycache__").is_dir() else []
    if not indexes:
        return True
    newest = {}                                        # module -> newest index time
    for index in indexes:
        module = index.name.split(".", 1)[0]
        newest[module] = max(newest.get(module, 0.0), index.stat().st_mtime)
    return any((folder / f"{module}.py").is_file() and (folder / f"{module}.py").stat().st_mtime > stamp
               for module, stamp in newest.items())


WARM_UP_MAX_TOKENS = 128    # above every row threshold of engine/policy.py: longer prompts run the same kernels


def warm_up(model, n_prompt=2):
    """Run the kernels a generation uses once (a prompt pass of the prompt's length, at most
    WARM_UP_MAX_TOKENS, and one decode step), so that compiling or loading them is not counted
    as the prompt's time; the engine picks kernels by row count, hence the prompt's length. Says
    so on stderr when the compile will take seconds."""
    import numpy as np

    if getattr(model, "backend", None) != "numba":
        return
    if kernel_cache_is_cold():
        print("minigpt2: compiling kernels (once)...", file=sys.stderr, flush=True)
    n = max(1, min(n_prompt, WARM_UP_MAX_TOKENS, model.config.n_positions - 1))
    ids = np.zeros((1, n), dtype=np.int64)                                      # [1, n]
    out = model(input_ids=ids, attention_mask=np.ones((1, n), dtype=np.int64),
                position_ids=np.arange(n)[None, :], use_cache=True, logits_to_keep=1)
    model(input_ids=ids[:, :1], attention_mask=np.ones((1, n + 1), dtype=np.int64),
          position_ids=np.array([[n]]), past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
