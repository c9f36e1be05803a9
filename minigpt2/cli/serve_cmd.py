"""`minigpt2 serve`."""

import os

from minigpt2.cli.common import DEFAULT_MODEL, FALLBACK_MODEL, add_dtype_argument, add_model_arguments, load


def add_serve_command(subparsers):
    """`minigpt2 serve`: an OpenAI-compatible server and the "Write With Transformer" page."""
    parser = subparsers.add_parser(
        "serve", help="serve the OpenAI completions API and a writing page (needs minigpt2[serve])",
        description="An OpenAI-compatible server (/v1/completions, /v1/models) with continuous batching, "
                    "and a page at / that continues your text. Needs: pip install \"minigpt2[serve]\".")
    add_model_arguments(parser)
    add_dtype_argument(parser)
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
        model, tokenizer, folder = load(args.model, args.backend, args.dtype, args.matmul_precision, args.int8_compute)
        name = os.path.basename(os.path.normpath(args.model or folder))
        if args.model is None and name != FALLBACK_MODEL:
            name = DEFAULT_MODEL
        serve(model, tokenizer, name, host=args.host, port=args.port, api_key=args.api_key,
              max_batch=args.max_batch, max_queue=args.max_queue)
        return 0

    parser.set_defaults(run=run)
