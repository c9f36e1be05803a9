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
    return parser


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
