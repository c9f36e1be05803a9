"""`minigpt2 tokenize TEXT`."""

from minigpt2.cli.common import stdin_text


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

        text = stdin_text() if args.text == "-" else args.text
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
