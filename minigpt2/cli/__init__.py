"""The `minigpt2` command: argument parsing only; the work lives in the library modules.

Each subcommand is one `add_<name>_command(subparsers)` function, in the module of its group
(generate_cmd, score_cmd, tokenize_cmd, models_cmd for download/info/convert, verify_cmd,
bench_cmd, serve_cmd), that declares its arguments and sets `run=` to the function doing the work; what
several commands share is in common.py. A new command is one more module here and one more
entry in COMMANDS. Errors the user can fix (bad input, missing files, no network) print
one line and exit non-zero, without a traceback.
"""

import argparse
import os
import sys

from minigpt2.cli.bench_cmd import add_bench_command
from minigpt2.cli.common import DEFAULT_MODEL, FALLBACK_MODEL  # noqa: F401  (minigpt2.cli.FALLBACK_MODEL)
from minigpt2.cli.generate_cmd import add_generate_command
from minigpt2.cli.models_cmd import add_convert_command, add_download_command, add_info_command
from minigpt2.cli.score_cmd import add_score_command
from minigpt2.cli.serve_cmd import add_serve_command
from minigpt2.cli.tokenize_cmd import add_tokenize_command
from minigpt2.cli.verify_cmd import add_verify_command
from minigpt2.version import __version__

# The subcommands, in the order `minigpt2 --help` lists them.
COMMANDS = (add_download_command, add_generate_command, add_score_command, add_info_command,
            add_tokenize_command, add_verify_command, add_bench_command, add_convert_command,
            add_serve_command)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minigpt2",
        description="GPT-2 in NumPy and Numba: generate, score, tokenize, download, inspect, verify.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"minigpt2 {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        code = args.run(args) or 0
        sys.stdout.flush()       # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        # the reader left (`| head -1`): stop quietly, as Unix tools do; stdout goes to devnull so
        # the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, KeyError) as error:
        print(f"minigpt2: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
