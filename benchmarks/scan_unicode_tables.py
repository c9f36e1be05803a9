# Compare pre-split categories of every code point: ours (regex module) vs tiktoken (Rust).
import sys, time
from minigpt2.tokenizer_reference import tiktoken_gpt2
from minigpt2.tokenizer import GPT2Tokenizer
tt = tiktoken_gpt2(); tok = GPT2Tokenizer.from_pretrained("gpt2", cache_size=0)
bad = []
def probe(c):
    ch = chr(c)
    return f"a{ch}a 1{ch}1 !{ch}! {ch}\n{ch} {ch}"
step = 512
for start in range(0, sys.maxunicode + 1, step):
    cps = [c for c in range(start, min(start+step, sys.maxunicode+1)) if not (0xD800 <= c <= 0xDFFF)]
    text = "|".join(probe(c) for c in cps)
    if tok.encode_ordinary(text) != tt.encode_ordinary(text):
        for c in cps:
            if tok.encode_ordinary(probe(c)) != tt.encode_ordinary(probe(c)):
                bad.append(c)
import unicodedata
print(len(bad))
for c in bad[:200]:
    print(hex(c), unicodedata.name(chr(c), "?"), unicodedata.category(chr(c)))
