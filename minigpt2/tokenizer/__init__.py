"""Text <-> token ids: GPT-2's byte-level BPE, in pure Python (importing it pulls neither NumPy nor Numba).

    bytes_unicode.py     the 256-entry byte <-> printable-character table
    bpe.py               the merge loops as free functions: bpe_ids, bpe_ids_long, bpe_symbols
    files.py             vocab.json / merges.txt / tokenizer_config.json: read, find, write
    gpt2_tokenizer.py    GPT2Tokenizer: pre-split, caches, special tokens, encode, decode (joins the rest)
    encode_call.py       tok(text, ...): batches, text pairs, pre-split words, truncation, offsets
    batch_encoding.py    padding rows into a batch
    explain.py           tok.explain(text): every step of the work, for people
    reference.py         the reference tokenizers the tests compare with (tiktoken, tokenizers)
"""

from minigpt2.tokenizer.gpt2_tokenizer import ENDOFTEXT, PACKAGE_VOCAB_DIR, PRETOKENIZE_PATTERN, GPT2Tokenizer

# transformers' fast tokenizer gives the same ids: its name is this tokenizer, so that import keeps working
GPT2TokenizerFast = GPT2Tokenizer

__all__ = ["ENDOFTEXT", "PACKAGE_VOCAB_DIR", "PRETOKENIZE_PATTERN", "GPT2Tokenizer", "GPT2TokenizerFast"]
