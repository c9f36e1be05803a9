"""The `minigpt2` command: argument parsing only; the work lives in the library modules.

Each subcommand is one `add_<name>_command(subparsers)` function that declares its
arguments and sets `run=` to the function doing the work. Errors the user can fix
(bad input, missing files, no network) print one line and exit non-zero, without a traceback.
"""

import argparse
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

    def run(args):
        from minigpt2 import hub

        if not args.names:
            print("\n".join(hub.describe_official_models(args.cache_dir)))
            print(f"\nDownload with: minigpt2 download NAME [NAME ...]   (cache: "
                  f"{hub.minigpt2_cache_dir(args.cache_dir)})")
            return 0
        for name in args.names:
            folder = hub.download_model(name, cache_dir=args.cache_dir, revision=args.revision,
                                        progress=not args.quiet)
            print(f"{name}: {folder}")
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
