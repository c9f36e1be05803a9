"""The reference tokenizers, built offline from the same two GPT-2 files (tests and benchmarks only).

- `tiktoken_gpt2()`: tiktoken's `gpt2` encoding (its own loader, pattern and special token),
  reading encoder.json / vocab.bpe from the package instead of downloading them.
- `tokenizers_gpt2()`: Hugging Face `tokenizers` ByteLevel BPE (the engine behind
  GPT2TokenizerFast) with "<|endoftext|>" added as a special token.

Both libraries are optional (`pip install minigpt2[reference]`) and imported only here, inside
the functions. Each builder checks "Hello world" -> [15496, 995] before returning, so a broken
reference never passes silently.
"""

from minigpt2.tokenizer.gpt2_tokenizer import ENDOFTEXT, PACKAGE_VOCAB_DIR

HELLO_WORLD_IDS = [15496, 995]   # transformers' GPT2Tokenizer docstring


def _checked(name, encode):
    ids = list(encode("Hello world"))
    if ids != HELLO_WORLD_IDS:
        raise RuntimeError(f"{name} reference is broken: 'Hello world' -> {ids}, expected {HELLO_WORLD_IDS}")


def tiktoken_gpt2(folder=PACKAGE_VOCAB_DIR):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    # tiktoken's own converter (it asserts that the merges rebuild encoder.json exactly), and the
    # same arguments as tiktoken_ext.openai_public.gpt2(), which would download the files.
    ranks = data_gym_to_mergeable_bpe_ranks(str(folder / "vocab.bpe"), str(folder / "encoder.json"))
    encoding = tiktoken.Encoding(name="gpt2", explicit_n_vocab=50257, pat_str=r50k_pat_str,
                                 mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256})
    _checked("tiktoken", encoding.encode_ordinary)
    return encoding


def tokenizers_gpt2(folder=PACKAGE_VOCAB_DIR):
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer(str(folder / "encoder.json"), str(folder / "vocab.bpe"))
    tokenizer.add_special_tokens([ENDOFTEXT])
    _checked("tokenizers", lambda text: tokenizer.encode(text).ids)
    return tokenizer
