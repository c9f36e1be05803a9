"""`minigpt2 generate PROMPT`."""

import argparse
import sys
import time

from minigpt2.cli.common import add_dtype_argument, add_model_arguments, load, unescape, warm_up


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
    add_model_arguments(parser)
    add_dtype_argument(parser)
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
    parser.add_argument("--ordinary", action="store_true",
                        help='read "<|endoftext|>" in PROMPT as plain text instead of the control token 50256')
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
        from minigpt2 import generate as gen

        start = time.perf_counter()
        model, tokenizer, _ = load(args.model, args.backend, args.dtype, args.matmul_precision, args.int8_compute)
        loaded = time.perf_counter() - start
        # --ordinary: "<|endoftext|>" typed in the prompt is text, as generate.stream(allowed_special=())
        allowed = () if args.ordinary else "all"
        ids = tokenizer.encode(args.prompt, allowed_special=allowed, disallowed_special=()) or [tokenizer.eos_token_id]
        if args.num_beams > 1 or args.num_return_sequences > 1:     # whole texts, at the end
            return print_whole_texts(args, model, tokenizer, ids)
        steps = gen.iter_generate(           # checks the settings: an error comes before any output
            model, [ids], max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, seed=args.seed,
            no_repeat_ngram_size=args.no_repeat_ngram_size, num_beams=args.num_beams,
            stop=[unescape(s) for s in args.stop], tokenizer=tokenizer, crop=args.crop,
            eos_token_id=tokenizer.eos_token_id)
        start = time.perf_counter()
        warm_up(model, len(ids))             # compiling / loading kernels is not the prompt's time
        kernels = time.perf_counter() - start
        times, ended_by = [], None
        sys.stdout.write(args.prompt)        # a closed pipe (`| head`) ends quietly in main()
        sys.stdout.flush()
        for step in steps:
            times.append(step.seconds)
            if step.texts[0]:
                sys.stdout.write(step.texts[0])
                sys.stdout.flush()
            if step.finished[0]:
                ended_by = "<|endoftext|>" if int(step.tokens[0]) == tokenizer.eos_token_id else "a stop string"
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(timing_line(len(ids), times, loaded + kernels, args.timing, ended_by, kernels), file=sys.stderr)
        return 0

    parser.set_defaults(run=run)


def print_whole_texts(args, model, tokenizer, ids):
    """Beam search, or several samples: the texts are known only at the end, one per line."""
    from minigpt2 import generate as gen

    out = gen.generate(
        model, [ids], max_new_tokens=args.max_new_tokens, do_sample=not args.greedy,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed, num_beams=args.num_beams,
        no_repeat_ngram_size=args.no_repeat_ngram_size, length_penalty=args.length_penalty,
        num_return_sequences=args.num_return_sequences, eos_token_id=tokenizer.eos_token_id)
    for row in out:
        print(args.prompt + tokenizer.decode([t for t in row[len(ids):] if t != tokenizer.eos_token_id]))
    return 0


def plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def timing_line(n_prompt, step_seconds, load_seconds, detailed, ended_by=None, kernel_seconds=0.0):
    """'prompt: 9 tokens, 310.2 tokens/s | generated: 50 tokens, 24.7 tokens/s'. The first step
    is the prompt pass (it also makes the first token); the others are one token each. A last
    token that ended the text (<|endoftext|>, or one that completed a stop string: ended_by says
    which) is not counted as generated: the count is of the tokens whose text was kept."""
    if not step_seconds:
        return f"prompt: {plural(n_prompt, 'token')} | generated: 0 tokens"
    prefill, decode = step_seconds[0], step_seconds[1:]
    kept = len(step_seconds) - (ended_by is not None)
    parts = [f"prompt: {plural(n_prompt, 'token')}, {n_prompt / prefill:.1f} tokens/s",
             f"generated: {plural(kept, 'token')}"
             + (f", {len(decode) / sum(decode):.1f} tokens/s" if decode and sum(decode) > 0 else "")
             + (f" (ended by {ended_by})" if ended_by else "")]
    if detailed:
        parts.append(f"load {load_seconds:.2f} s (kernels {kernel_seconds:.2f} s), prompt pass {1000 * prefill:.1f} ms "
                     f"({1000 * prefill / n_prompt:.2f} ms/token)"
                     + (f", {1000 * sum(decode) / len(decode):.2f} ms/new token" if decode else ""))
    return " | ".join(parts)
