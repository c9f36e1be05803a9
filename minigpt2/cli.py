"""The `minigpt2` command: argument parsing only; the work lives in the library modules.

Each subcommand is one `add_<name>_command(subparsers)` function that declares its
arguments and sets `run=` to the function doing the work. Errors the user can fix
(bad input, missing files, no network) print one line and exit non-zero, without a traceback.
"""

import argparse
import os
import sys


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minigpt2",
        description="GPT-2 in NumPy and Numba: generate, score, tokenize, download, inspect, verify.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Subcommands register themselves below, one function each.
    add_download_command(subparsers)
    add_generate_command(subparsers)
    add_score_command(subparsers)
    add_info_command(subparsers)
    add_tokenize_command(subparsers)
    add_verify_command(subparsers)
    add_bench_command(subparsers)
    add_convert_command(subparsers)
    add_serve_command(subparsers)
    return parser


def add_download_command(subparsers):
    """`minigpt2 download gpt2 [...]`: fetch official weights into the cache (no name: list them)."""
    parser = subparsers.add_parser(
        "download", help="download GPT-2 weights into the local cache (no name: list the official models)",
        description="Download config.json, model.safetensors and the tokenizer files of a model into the "
                    "minigpt2 cache ($MINIGPT2_HOME, default ~/.cache/minigpt2), verified by size and sha256 "
                    "and resumable. Endpoint: $HF_ENDPOINT (default https://huggingface.co).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, or a repository id owner/name")
    parser.add_argument("--cache-dir", default=None, help="download here instead of the minigpt2 cache")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--source", choices=("hf", "openai"), default="hf",
                        help="openai: OpenAI's original TF release (124M, 355M, 774M, 1558M or the gpt2 names)")

    def run(args):
        from minigpt2.weights import hub

        if not args.names:
            print_model_list(args.cache_dir)
            print(f"\nDownload with: minigpt2 download NAME [NAME ...]   (cache: "
                  f"{hub.minigpt2_cache_dir(args.cache_dir)})")
            return 0
        for name in args.names:
            if args.source == "openai":
                from minigpt2.weights.openai_release import download_openai_release
                folder = download_openai_release(name, cache_dir=args.cache_dir, progress=not args.quiet)
            else:
                folder = hub.download_model(name, cache_dir=args.cache_dir, revision=args.revision,
                                            progress=not args.quiet)
            print(f"{name}: {folder}")
        return 0

    parser.set_defaults(run=run)


# ---------------------------------------------------------------- generate, score, info

DEFAULT_MODEL = "gpt2"
FALLBACK_MODEL = "tiny-shakespeare"   # bundled with the package: runs when gpt2 cannot be had


def _model_folder(name):
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


def _load(name, backend="numba", dtype="auto", matmul_precision="highest"):
    """(model, tokenizer, folder) for --model NAME, weights stored as --dtype; the numba kernels set
    to --matmul-precision."""
    from minigpt2.model import GPT2LMHeadModel
    from minigpt2.tokenizer import GPT2Tokenizer

    if matmul_precision != "highest":
        from minigpt2 import engine
        engine.set_float32_matmul_precision(matmul_precision)
    folder = _model_folder(name)
    model = GPT2LMHeadModel.from_pretrained(folder, backend=backend, dtype=dtype)
    tokenizer = GPT2Tokenizer.from_pretrained(folder)
    if len(tokenizer) > model.config.vocab_size:
        # else the first id past the model's vocabulary fails deep in the run, naming no file
        raise ValueError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}; put the model's own vocab.json and merges.txt in the folder")
    return model, tokenizer, folder


def _unescape(text):
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


def _add_model_arguments(parser):
    parser.add_argument("--model", default=None, metavar="NAME_OR_FOLDER",
                        help=f"a model name (gpt2, gpt2-medium, ..., {FALLBACK_MODEL}) or a folder with "
                             f"config.json + model.safetensors (default: {DEFAULT_MODEL}, downloaded on first "
                             f"use; offline: the bundled {FALLBACK_MODEL})")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                        help="numba: the fast kernels (default); numpy: the plain reference ops")


STORAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")   # minigpt2.quantize.DTYPES, without importing it


def _add_dtype_argument(parser):
    parser.add_argument("--dtype", default="auto", choices=STORAGE_DTYPES + ("auto",),
                        help="how the weights are stored, converted once at load (computing stays float32): "
                             "bfloat16 / float16 half the bytes, int8 a quarter; faster decoding, slightly "
                             "different logits (default: auto = as stored: float32, or the type of a folder "
                             "written by `minigpt2 convert`)")
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high", "medium"),
                        help="medium: the prompt's matmuls and attention use bfloat16 products on AMX tiles "
                             "where the CPU has them (faster, logits move as with bfloat16 weights); decode "
                             "steps stay float32 (default: highest = float32 products)")


def add_generate_command(subparsers):
    """`minigpt2 generate PROMPT`: stream a continuation to stdout, timing to stderr."""
    parser = subparsers.add_parser(
        "generate", help="continue a prompt (streams the text; sampling controls as in transformers)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Continue PROMPT with GPT-2. The prompt and the continuation go to stdout as they are\n"
                    "generated; a timing line goes to stderr. Sampling by default (top-k 50, as in\n"
                    "transformers); --greedy or --temperature 0 for the most likely tokens.",
        epilog="examples:\n"
               '  minigpt2 generate "Alan Turing theorized that"\n'
               '  minigpt2 generate "Alan Turing theorized that" --greedy --max-new-tokens 40\n'
               '  minigpt2 generate "Once upon a time" --temperature 0.8 --top-p 0.95 --seed 0\n'
               '  minigpt2 generate "The capital of France is" --stop "." --stop "\\n" --model ./my-model-folder\n',
    )
    parser.add_argument("prompt", metavar="PROMPT", help='the text to continue ("" starts from <|endoftext|>)')
    _add_model_arguments(parser)
    _add_dtype_argument(parser)
    parser.add_argument("--max-new-tokens", type=int, default=50, metavar="N", help="tokens to add (default: 50)")
    parser.add_argument("--temperature", type=float, default=1.0, metavar="T",
                        help="< 1 sharper, > 1 flatter, 0 = greedy (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=50, metavar="K",
                        help="sample among the K most likely tokens, ties kept; 0 = off (default: 50)")
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P",
                        help="sample among the fewest most likely tokens whose probabilities reach P (default: 1.0 = off)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R",
                        help="> 1 discourages tokens already in the text (default: 1.0 = off)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="seed for sampling: the same seed gives the same text (default: random)")
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    parser.add_argument("--stop", action="append", default=[], metavar="STR",
                        help='stop before this text (repeatable; "\\n" means a newline)')
    parser.add_argument("--crop", action="store_true",
                        help="past the model's context (1024 tokens for GPT-2) keep going on its last "
                             "tokens (slower) instead of stopping with an error")
    parser.add_argument("--timing", action="store_true",
                        help="also print load time and milliseconds per token on stderr")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N",
                        help="beam search with N beams (prints the text at the end; default: 1 = off)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N",
                        help="never repeat an N-token sequence (default: 0 = off)")
    parser.add_argument("--length-penalty", type=float, default=1.0, metavar="X",
                        help="beams: > 0 favours longer texts, < 0 shorter ones (default: 1.0)")
    parser.add_argument("--num-return-sequences", type=int, default=1, metavar="N",
                        help="print N texts (<= --num-beams with beams; sampled otherwise)")

    def run(args):
        import time

        from minigpt2 import generate as gen

        start = time.perf_counter()
        model, tokenizer, _ = _load(args.model, args.backend, args.dtype, args.matmul_precision)
        loaded = time.perf_counter() - start
        ids = tokenizer.encode(args.prompt) or [tokenizer.eos_token_id]
        if args.num_beams > 1 or args.num_return_sequences > 1:     # whole texts, at the end
            out = gen.generate(
                model, [ids], max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                repetition_penalty=args.repetition_penalty, seed=args.seed, num_beams=args.num_beams,
                no_repeat_ngram_size=args.no_repeat_ngram_size, length_penalty=args.length_penalty,
                num_return_sequences=args.num_return_sequences, eos_token_id=tokenizer.eos_token_id)
            for row in out:
                print(args.prompt + tokenizer.decode([t for t in row[len(ids):] if t != tokenizer.eos_token_id]))
            return 0
        steps = gen.iter_generate(
            model, [ids], max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, seed=args.seed,
            no_repeat_ngram_size=args.no_repeat_ngram_size, num_beams=args.num_beams,
            stop=[_unescape(s) for s in args.stop], tokenizer=tokenizer, crop=args.crop,
            eos_token_id=tokenizer.eos_token_id)
        times = []
        try:
            sys.stdout.write(args.prompt)
            sys.stdout.flush()
            for step in steps:
                times.append(step.seconds)
                if step.texts[0]:
                    sys.stdout.write(step.texts[0])
                    sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # the reader left (`| head`): stop quietly; point stdout at devnull so the
            # interpreter's final flush does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(_timing_line(len(ids), times, loaded, args.timing), file=sys.stderr)
        return 0

    parser.set_defaults(run=run)


def _timing_line(n_prompt, step_seconds, load_seconds, detailed):
    """'prompt: 9 tokens, 310.2 tokens/s | generated: 50 tokens, 24.7 tokens/s'. The first step
    is the prompt pass (it also makes the first token); the others are one token each."""
    if not step_seconds:
        return f"prompt: {n_prompt} tokens | generated: 0 tokens"
    prefill, decode = step_seconds[0], step_seconds[1:]
    parts = [f"prompt: {n_prompt} tokens, {n_prompt / prefill:.1f} tokens/s",
             f"generated: {len(step_seconds)} tokens"
             + (f", {len(decode) / sum(decode):.1f} tokens/s" if decode and sum(decode) > 0 else "")]
    if detailed:
        parts.append(f"load {load_seconds:.2f} s, prompt pass {1000 * prefill:.1f} ms "
                     f"({1000 * prefill / n_prompt:.2f} ms/token)"
                     + (f", {1000 * sum(decode) / len(decode):.2f} ms/new token" if decode else ""))
    return " | ".join(parts)


def add_score_command(subparsers):
    """`minigpt2 score --text T`: perplexity of a text (and, with --per-token, each token's log-prob)."""
    parser = subparsers.add_parser(
        "score", help="perplexity of a text (and per-token log-probabilities)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a text with the model: its perplexity, exp(mean negative log-likelihood), the\n"
                    "number transformers' loss gives. The first token is only context. Texts longer than\n"
                    "the context are scored with a sliding window (transformers' perplexity guide).",
        epilog="examples:\n"
               '  minigpt2 score --text "The quick brown fox jumps over the lazy dog."\n'
               "  minigpt2 score --file data/tinyshakespeare.txt --stride 512\n"
               '  minigpt2 score --text "Hello world, hello" --per-token\n',
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="T", help="the text to score")
    source.add_argument("--file", metavar="F", help="a UTF-8 text file to score")
    _add_model_arguments(parser)
    _add_dtype_argument(parser)
    parser.add_argument("--stride", type=int, default=None, metavar="S",
                        help="sliding-window step for long texts (default: half the context)")
    parser.add_argument("--per-token", action="store_true", help="print a table of tokens and log-probabilities")

    def run(args):
        from minigpt2.scoring import score

        if args.file is not None:
            try:
                with open(args.file, encoding="utf-8") as f:
                    text = f.read()
            except UnicodeDecodeError as error:
                raise ValueError(f"{args.file} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        else:
            text = args.text
        model, tokenizer, _ = _load(args.model, args.backend, args.dtype, args.matmul_precision)
        ids = tokenizer.encode(text, allowed_special=())   # text, never control tokens
        if len(ids) < 2:
            raise ValueError(f"the text has {len(ids)} token(s); scoring needs at least 2 (the first is only context)")
        result = score(model, ids, stride=args.stride, progress=sys.stderr.isatty())
        if args.per_token:
            print(f"{'pos':>6}  {'id':>6}  {'logprob':>9}  token")
            for position, logprob in zip(result.positions, result.logprobs):
                token_id = int(ids[position])
                print(f"{position:>6}  {token_id:>6}  {logprob:>9.4f}  {tokenizer.decode([token_id])!r}")
        print(f"perplexity: {result.perplexity:.4f}  (mean negative log-likelihood {result.mean_nll:.4f} nats "
              f"over {result.logprobs.size} tokens, {result.n_windows} window{'s' if result.n_windows > 1 else ''})")
        return 0

    parser.set_defaults(run=run)


def print_model_list(cache_dir=None):
    """The official models (downloaded or not) and the models bundled with the package."""
    from minigpt2.weights import hub

    print("official models:")
    print("\n".join("  " + line for line in hub.describe_official_models(cache_dir)))
    print("bundled models: (inside the package, no download needed)")
    bundled = hub.bundled_models()
    for name, folder in bundled.items():
        print(f"  {name:<20} {folder}")
    if not bundled:
        print("  (none)")


def add_info_command(subparsers):
    """`minigpt2 info [--model M]`: a model's config, parameter count and files; no model: the list."""
    parser = subparsers.add_parser(
        "info", help="a model's config, parameter count and files (no --model: the models available)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Without --model: the official GPT-2 models (and whether they are downloaded) and\n"
                    "the models bundled with minigpt2. With --model: its folder, config, parameter count\n"
                    "and files. Never downloads.",
        epilog="examples:\n  minigpt2 info\n  minigpt2 info --model gpt2\n  minigpt2 info --model ./my-model-folder\n",
    )
    parser.add_argument("--model", default=None, metavar="NAME_OR_FOLDER", help="a model name or folder")

    def run(args):
        from minigpt2.weights import hub

        if args.model is None:
            print_model_list()
            return 0
        folder = hub.resolve_model_folder(args.model, local_files_only=True)
        print("\n".join(describe_model_folder(folder)))
        return 0

    parser.set_defaults(run=run)


def describe_model_folder(folder):
    """Lines describing a model folder: config fields, parameter count (read from the weights'
    header, not loaded), and files with sizes."""
    from pathlib import Path

    import numpy as np

    from minigpt2.config import GPT2Config
    from minigpt2.weights.safetensors import load_file

    folder = Path(folder)
    config = GPT2Config.from_pretrained(folder)
    lines = [f"folder: {folder}", "config:"]
    for key, value in sorted(config.to_dict().items()):
        lines.append(f"  {key}: {value}")
    weights = folder / "model.safetensors"
    if weights.is_file():
        from minigpt2.quantize import stored_dtype

        tensors = load_file(weights)
        storage = stored_dtype(folder)          # a quantize.save_converted folder: its packed type
        # attn.bias / attn.masked_bias are causal-mask buffers; lm_head.weight is tied to wte;
        # the per-channel scales of int8 weights are part of the storage, not parameters
        counted = [name for name in tensors
                   if not name.endswith((".attn.bias", ".attn.masked_bias")) and name != "lm_head.weight"
                   and not (storage == "int8" and name.endswith(".scale"))]
        n_params = sum(int(np.prod(tensors[name].shape)) for name in counted)
        stored = f", stored as {storage}" if storage else ""
        lines.append(f"parameters: {n_params:,} ({n_params / 1e6:.1f}M, lm_head tied to wte{stored})")
    lines.append("files:")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            lines.append(f"  {path.name:<24} {path.stat().st_size:>14,} bytes")
    return lines


def add_tokenize_command(subparsers):
    """`minigpt2 tokenize TEXT`: the tokens and ids of a text (or `--decode` ids back to text)."""
    parser = subparsers.add_parser(
        "tokenize", help="show the GPT-2 tokens and ids of a text",
        description="Encode TEXT with GPT-2's byte-level BPE and print one line per token: position, id, "
                    "the token as in the vocabulary, and the text it stands for. Works offline for the "
                    "official names (the vocabulary ships with minigpt2).",
    )
    parser.add_argument("text", metavar="TEXT", help="the text ('-' reads standard input); ids with --decode")
    parser.add_argument("--model", default="gpt2", help="tokenizer name or folder (default: gpt2)")
    parser.add_argument("--ids", action="store_true", help="print only the ids, space separated")
    parser.add_argument("--explain", action="store_true",
                        help="show the work: pieces, bytes, every merge, ids")
    parser.add_argument("--ordinary", action="store_true",
                        help='encode "<|endoftext|>" as plain text instead of id 50256')
    parser.add_argument("--add-prefix-space", action="store_true", help="encode as if TEXT started with a space")
    parser.add_argument("--decode", action="store_true", help="TEXT is ids (spaces or commas): print the text")

    def run(args):
        from minigpt2.tokenizer import GPT2Tokenizer

        text = sys.stdin.read() if args.text == "-" else args.text
        tok = GPT2Tokenizer.from_pretrained(args.model, add_prefix_space=args.add_prefix_space)
        if args.decode:
            try:
                ids = [int(part) for part in text.replace(",", " ").replace("[", " ").replace("]", " ").split()]
            except ValueError:
                raise ValueError(f"--decode expects integer ids, got {text!r}") from None
            print(tok.decode(ids))
            return 0
        allowed = () if args.ordinary else "all"
        if args.explain:
            print(tok.explain(text, allowed_special=allowed))
            return 0
        ids = tok.encode(text, allowed_special=allowed)
        if args.ids:
            print(" ".join(map(str, ids)))
            return 0
        print(f"{len(ids)} tokens, {len(text)} characters, {len(text.encode('utf-8'))} bytes")
        for position, token_id in enumerate(ids):
            data = tok.decode_bytes([token_id])
            try:
                shown = repr(data.decode("utf-8"))
            except UnicodeDecodeError:
                shown = f"{data!r}  (part of a UTF-8 character)"
            print(f"{position:5d} {token_id:6d}  {tok.convert_ids_to_tokens(token_id):<16} {shown}")
        print(f"ids: {ids}")
        return 0

    parser.set_defaults(run=run)


def add_verify_command(subparsers):
    """`minigpt2 verify`: our forward pass next to transformers (live or saved), layer by layer."""
    parser = subparsers.add_parser(
        "verify", help="compare every layer and sub-step with transformers (live or a saved reference)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the model on some tokens next to a reference (transformers on the same weights,\n"
                    "live or saved in a .npz) and compare every sub-step of every block: max abs diff,\n"
                    "max relative diff (max|ours - ref| / max|ref|) and cosine similarity. Prints the first\n"
                    "place over the tolerance, the last place still fine, top-1 / top-5 agreement of the\n"
                    "next-token predictions, and PASS or FAIL. Exit code: 0 PASS, 1 FAIL (or an error).\n"
                    "transformers and torch are needed only for --against transformers and --save-reference.",
        epilog="examples:\n"
               '  minigpt2 verify --model gpt2 --text "Alan Turing theorized that" --against transformers\n'
               '  minigpt2 verify --model gpt2 --text "Alan Turing theorized that" --save-reference ref.npz\n'
               "  minigpt2 verify --model gpt2 --reference ref.npz --plot errors.png      # no torch needed\n"
               "  minigpt2 verify --model ./my-model-folder --ids 1 2 3 4 --against transformers --tolerance 1e-5\n",
    )
    _add_model_arguments(parser)
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--text", metavar="T", help="the text to run (needs the model's tokenizer)")
    tokens.add_argument("--ids", nargs="+", metavar="ID",
                        help="token ids to run, e.g. --ids 464 2068 7586 or --ids 464,2068,7586 "
                             "(with --reference: optional, must be the reference's)")
    against = parser.add_mutually_exclusive_group()
    against.add_argument("--against", choices=("transformers",),
                         help="run transformers on the same folder now (needs torch + transformers)")
    against.add_argument("--reference", metavar="FILE", help="a reference .npz saved by --save-reference")
    parser.add_argument("--save-reference", metavar="FILE",
                        help="run transformers and save what it computes to FILE (.npz), to check later "
                             "without torch; with --against transformers, also compare")
    parser.add_argument("--tolerance", type=float, default=None, metavar="X",
                        help="largest relative error max|ours - ref| / max|ref| a place may have "
                             "(default: 1e-4)")
    parser.add_argument("--plot", metavar="FILE.png", help="save the error per layer and sub-step (log scale)")

    def run(args):
        from minigpt2 import verify

        if args.against is None and args.reference is None and args.save_reference is None:
            parser.error("say what to compare with: --against transformers, --reference FILE, "
                         "or --save-reference FILE")
        if args.reference is not None and args.save_reference is not None:
            parser.error("--save-reference makes a new reference; it does not go with --reference")
        folder = _model_folder(args.model)
        if args.ids is not None:
            ids = _parse_token_ids(args.ids)
        elif args.text is not None:
            from minigpt2.tokenizer import GPT2Tokenizer
            ids = GPT2Tokenizer.from_pretrained(folder).encode(_unescape(args.text))
            if not ids:
                raise ValueError("--text gives no tokens")
        else:
            ids = None
            if args.reference is None:
                parser.error("give the tokens to run: --text T or --ids ID [ID ...]")
        reference = args.reference
        try:
            if args.against is not None or args.save_reference is not None:
                reference = verify.reference_from_transformers(folder, [ids])
        except ImportError as error:
            print(f"minigpt2: error: {error}", file=sys.stderr)
            return 1
        if args.save_reference is not None:
            reference.save(args.save_reference)
            print(f"wrote {args.save_reference}: {reference.source}, {len(ids)} tokens, "
                  f"{len(reference.traces)} traced places")
            if args.against is None:
                return 0
        tolerance = verify.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
        report = verify.compare(folder, reference, input_ids=None if ids is None else [ids],
                                tolerance=tolerance, backend=args.backend)
        print(report)
        if args.plot is not None:
            report.plot(args.plot)
            print(f"plot: {args.plot}")
        return 0 if report.passed else 1

    parser.set_defaults(run=run)


def _parse_token_ids(values):
    """['464', '2068,7586'] -> [464, 2068, 7586]."""
    ids = []
    for value in values:
        for piece in value.replace(",", " ").split():
            try:
                ids.append(int(piece))
            except ValueError:
                raise ValueError(f"--ids: {piece!r} is not a token id (give integers, e.g. --ids 464 2068 7586)") from None
    if not ids:
        raise ValueError("--ids: no token ids given")
    return ids



def add_bench_command(subparsers):
    """`minigpt2 bench`: speed and memory of one model, optionally next to transformers."""
    parser = subparsers.add_parser(
        "bench", help="measure prefill and decode speed, start time and memory (one table)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure the numba backend on one model: prefill tokens/s (last-position logits),\n"
                    "decode tokens/s (16-token prompt, greedy, KV cache), Numba compile time, start time\n"
                    "of a fresh process to its first token, load time and RSS. Each configuration runs in\n"
                    "fresh worker processes that take turns, best of --rounds. --model takes a preset name\n"
                    "(a random checkpoint of that shape is written once to ~/.cache/minigpt2/bench/) or a\n"
                    "folder with config.json + model.safetensors. transformers runs in float32.\n"
                    "--matmul-precision medium lets prefill matmuls and attention use bfloat16 products\n"
                    "(AMX tiles, where the CPU has them) in both engines, as torch.set_float32_matmul_precision.",
        epilog="examples:\n"
               "  minigpt2 bench --quick\n"
               "  minigpt2 bench --model gpt2-medium --dtype bfloat16 --compare-transformers\n"
               "  minigpt2 bench --dtype bfloat16 --matmul-precision medium --lengths 512 1024\n"
               "  minigpt2 bench --model gpt2 --batch 8 --dtype int8\n",
    )
    parser.add_argument("--model", default="gpt2", metavar="M",
                        help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 (random weights), or a folder")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "int8"),
                        help="weight storage (compute is float32)")
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="sequences decoded at once")
    parser.add_argument("--matmul-precision", default="highest", choices=("highest", "high", "medium"),
                        help="'medium': bfloat16 products in prefill (AMX) where the CPU has them")
    parser.add_argument("--compare-transformers", action="store_true",
                        help="also measure transformers (PyTorch, float32) on the same weights")
    parser.add_argument("--numpy", action="store_true", help="also measure the numpy backend")
    parser.add_argument("--quick", action="store_true", help="prefill 128 only, 32 new tokens, one round")
    parser.add_argument("--lengths", type=int, nargs="+", metavar="N", help="prefill lengths (default 128 512 1024)")
    parser.add_argument("--new-tokens", type=int, metavar="N", help="decode steps (default 128)")
    parser.add_argument("--rounds", type=int, metavar="N", help="rounds over all configurations (default 2)")
    parser.add_argument("--threads", type=int, default=2, metavar="N",
                        help="threads for Numba, BLAS and torch (default 2)")

    def run(args):
        from minigpt2 import bench
        from minigpt2.config import PRESETS

        if args.batch < 1 or args.threads < 1:
            raise ValueError("--batch and --threads must be at least 1")
        if args.model in PRESETS:
            folder = bench.write_random_checkpoint(bench.default_folder(args.model), args.model)
        elif os.path.isdir(args.model):
            from minigpt2.weights.checkpoints import weight_files
            from minigpt2.config import GPT2Config

            GPT2Config.from_pretrained(args.model)   # here, not as a traceback from every worker
            weight_files(args.model)
            folder = args.model
        else:
            raise ValueError(f"--model must be one of {sorted(PRESETS)} or a folder, got {args.model!r}")
        if args.compare_transformers and not bench.transformers_available():
            raise ValueError("--compare-transformers needs torch and transformers installed")
        lengths = args.lengths or ([128] if args.quick else [128, 512, 1024])
        new_tokens = args.new_tokens if args.new_tokens is not None else (32 if args.quick else 128)
        rounds = args.rounds or (1 if args.quick else 2)
        precision = args.matmul_precision
        suffix = "" if precision == "highest" else f", {precision}"
        name = f"numba {args.dtype}{suffix}"
        columns = {name: {"backend": "numba", "folder": str(folder), "dtype": args.dtype, "batch": args.batch,
                          "matmul_precision": precision}}
        if args.numpy:
            columns["numpy float32"] = {"backend": "numpy", "folder": str(folder), "dtype": "float32",
                                        "batch": args.batch}
        transformers_name = f"transformers float32{suffix}"
        if args.compare_transformers:
            columns[transformers_name] = {"backend": "transformers", "folder": str(folder), "dtype": "float32",
                                          "batch": args.batch, "matmul_precision": precision}
        results = bench.run_columns(columns, lengths, new_tokens, rounds=rounds, threads=args.threads,
                                    start_times=True, log=lambda m: print("  " + m, file=sys.stderr, flush=True))
        print(f"{args.model}, batch {args.batch}, {args.threads} threads, best of {rounds} round(s); "
              f"{bench.machine_description()}\n")
        print(bench.format_table(results, lengths, new_tokens, batch=args.batch,
                                 compare=(name, transformers_name) if args.compare_transformers else None))
        if new_tokens and args.model in PRESETS:      # the decode speed no engine can pass on this machine
            streamed = bench.streamed_bytes_per_token(args.model, args.dtype)
            print("\n" + bench.ceiling_line(bench.run_bandwidth(args.threads), {args.dtype: streamed})
                  + " That is per sequence: a batch shares each step's weights.")

    parser.set_defaults(run=run)


def add_convert_command(subparsers):
    """`minigpt2 convert MODEL OUT_FOLDER --dtype D`: store the weights packed once, load them fast later."""
    parser = subparsers.add_parser(
        "convert", help="write a copy of a model with bfloat16 / float16 / int8 weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a model's weight matrices to a smaller storage type once and save the result\n"
                    "(minigpt2.quantize.save_converted), with the tokenizer files. The folder loads with\n"
                    "from_pretrained / --model like any other, without converting again. Only minigpt2\n"
                    "reads it: keep the original checkpoint for transformers.",
        epilog="examples:\n"
               "  minigpt2 convert gpt2 ./gpt2-int8 --dtype int8\n"
               '  minigpt2 generate "Hello" --model ./gpt2-int8\n'
               "  minigpt2 convert ~/.cache/minigpt2/openai-124M ./gpt2-hf   (OpenAI's TF release -> transformers)\n",
    )
    parser.add_argument("model", metavar="MODEL", help="a model name or a folder with config.json + model.safetensors")
    parser.add_argument("out_folder", metavar="OUT_FOLDER", help="where to write the converted model")
    parser.add_argument("--dtype", choices=STORAGE_DTYPES[1:], help="the storage type (required, except for "
                        "an OpenAI release folder, which without --dtype becomes a float32 Hugging Face folder)")

    def run(args):
        import shutil
        from pathlib import Path

        from minigpt2 import quantize
        from minigpt2.weights import hub
        from minigpt2.model import GPT2LMHeadModel
        from minigpt2.weights import openai_release, tf_checkpoint

        folder = Path(hub.resolve_model_folder(args.model))
        out = Path(args.out_folder)
        if args.dtype is None and tf_checkpoint.is_openai_release(folder):
            print(f"{openai_release.convert_to_hf(folder, out)}: float32 safetensors + config.json")
            return 0
        if args.dtype is None:
            raise ValueError("--dtype is required (bfloat16, float16 or int8)")
        if out.resolve() == folder.resolve():
            raise ValueError(f"OUT_FOLDER is the model's own folder {folder}; pick a new folder")
        if (out / "model.safetensors").exists():
            raise ValueError(f"{out / 'model.safetensors'} already exists; pick a new folder")
        model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy", dtype=args.dtype)
        quantize.save_converted(model, out)
        for name in ("vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer_config.json",
                     "special_tokens_map.json", "generation_config.json"):
            if (folder / name).is_file():              # the tokenizer goes with the model
                shutil.copyfile(folder / name, out / name)
        before = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        after = (out / "model.safetensors").stat().st_size
        print(f"{out}: {args.dtype} weights, {after / 1e6:.1f} MB (was {before / 1e6:.1f} MB)")
        return 0

    parser.set_defaults(run=run)


def add_serve_command(subparsers):
    """`minigpt2 serve`: an OpenAI-compatible server and the "Write With Transformer" page."""
    parser = subparsers.add_parser(
        "serve", help="serve the OpenAI completions API and a writing page (needs minigpt2[serve])",
        description="An OpenAI-compatible server (/v1/completions, /v1/models) with continuous batching, "
                    "and a page at / that continues your text. Needs: pip install \"minigpt2[serve]\".")
    _add_model_arguments(parser)
    _add_dtype_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on every /v1 request")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="rows decoded together in one step (default: 8)")
    parser.add_argument("--max-queue", type=int, default=64, metavar="N",
                        help="requests that may wait for a row; more get 503 (default: 64)")

    def run(args):
        try:
            from minigpt2.serve.app import serve
        except ImportError as error:
            raise ValueError(f"serve needs the extra: pip install \"minigpt2[serve]\" ({error})") from None
        if args.max_batch < 1 or args.max_queue < 1:
            raise ValueError("--max-batch and --max-queue must be >= 1")
        model, tokenizer, folder = _load(args.model, args.backend, args.dtype, args.matmul_precision)
        name = os.path.basename(os.path.normpath(args.model or folder))
        if args.model is None and name != FALLBACK_MODEL:
            name = DEFAULT_MODEL
        serve(model, tokenizer, name, host=args.host, port=args.port, api_key=args.api_key,
              max_batch=args.max_batch, max_queue=args.max_queue)
        return 0

    parser.set_defaults(run=run)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (ValueError, OSError, KeyError) as error:
        print(f"minigpt2: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
