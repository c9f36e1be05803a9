"""minigpt2 serve: an OpenAI-compatible completions server with continuous batching, and a page.

    batcher.py   the decode loop: many requests share one batched step (pure NumPy, no HTTP)
    protocol.py  the completions request checked once at entry, and the OpenAI-shaped replies
    app.py       the Starlette routes (needs the extra: pip install "minigpt2[serve]")
    static/      the "Write With Transformer" page, served at / (no CDN: works offline)
"""
