"""`minigpt2 verify`."""

import argparse
import sys

from minigpt2.cli.common import add_model_arguments, model_folder, unescape


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
    add_model_arguments(parser)
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
        folder = model_folder(args.model)
        if args.ids is not None:
            ids = parse_token_ids(args.ids)
        elif args.text is not None:
            from minigpt2.tokenizer import GPT2Tokenizer
            ids = GPT2Tokenizer.from_pretrained(folder).encode(unescape(args.text))
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


def parse_token_ids(values):
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
