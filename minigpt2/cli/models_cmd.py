"""The commands about model folders: `download`, `info` and `convert`."""

import argparse
import shutil
from pathlib import Path

from minigpt2.cli.common import STORAGE_DTYPES


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
