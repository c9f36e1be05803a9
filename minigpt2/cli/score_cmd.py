"""`minigpt2 score --text T | --file F`."""

import argparse
import sys

from minigpt2.cli.common import add_dtype_argument, add_model_arguments, load, read_utf8


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
    add_model_arguments(parser)
    add_dtype_argument(parser)
    parser.add_argument("--stride", type=int, default=None, metavar="S",
                        help="sliding-window step for long texts (default: half the context; at most the "
                             "context, which a longer stride is cut to)")
    parser.add_argument("--per-token", action="store_true", help="print a table of tokens and log-probabilities")

    def run(args):
        from minigpt2.scoring import score

        text = read_utf8(args.file, args.file) if args.file is not None else args.text
        model, tokenizer, _ = load(args.model, args.backend, args.dtype, args.matmul_precision, args.int8_compute)
        context = model.config.n_positions
        if args.stride is not None and args.stride > context:
            # a window moves at most its own length: take the model's context (one line on stderr)
            print(f"minigpt2: --stride {args.stride} is longer than the model's context; using {context}",
                  file=sys.stderr)
            args.stride = context
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
