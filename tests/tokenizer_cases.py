"""Generated tokenizer test texts: what usually breaks GPT-2 tokenizers (shared by the tests and
tests/fixtures/make_tokenizer_fixtures.py)."""

import random


def edge_case_texts(n_random=800):
    """Deterministic strings covering what usually breaks GPT-2 tokenizers."""
    whitespace = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n ", "\u00a0", "\u3000",
                  "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\u200b", " \t \n"]
    contractions = [f"{w}'{c}" for w in ("I", "you", "YOU", "it") for c in
                    ("s", "S", "t", "T", "re", "RE", "Re", "rE", "ve", "VE", "m", "M", "ll", "LL", "Ll", "d", "D")]
    contractions += ["don't", "DON'T", "'s", "''s", "'", "'''", "rock'n'roll", "o'clock", "’s"]
    digits = ["0", "2022", "1,000.50", "3.14159", "1e-5", "٣٤٥", "①②", "Ⅻ", "¾", "0x1F", "12345678901234567890"]
    punctuation = ["?!", "...", "…", "--", "—", ":D", ";-)", "«»", "“quoted”", "<|", "|>", "<|endoftext", "@#$%^&*()",
                   "!!!???", "```", "~~~", "\\n", "¿¡"]
    emoji = ["🤗", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇫🇷", "❤️", "🫠", "🧑🏿‍🚀"]
    scripts = ["日本語のテキスト", "中文字符", "한국어", "العربية", "עברית", "हिन्दी", "ไทย", "Русский язык",
               "Ελληνικά", "e\u0301", "ﬁ", "Ǆ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ᚠᛇᚻ", "ⴰⵣⵓⵍ", "Ꭰ"]
    controls = ["\x00", "\x07", "\x1b[31m", "\x7f", "\ufeff", "\ufffd", "\U0010ffff", "\ud7ff"]
    long_words = ["a" * 3000, "supercalifragilistic" * 60, "🤗" * 200, "ab1" * 500, " " * 1000,
                  "\n" * 300, "x" + "\u0301" * 200]
    blocks = whitespace + contractions + digits + punctuation + emoji + scripts + controls + long_words
    texts = list(blocks)
    rng = random.Random(0)
    for _ in range(n_random):
        texts.append("".join(rng.choice(blocks[:-len(long_words)]) for _ in range(rng.randint(2, 8))))
    return texts
