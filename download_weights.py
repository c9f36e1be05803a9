"""Download official GPT-2 weights into the minigpt2 cache: `python download_weights.py gpt2 [gpt2-medium ...]`.

With no name it lists the five official models and their sizes. Options: --cache-dir DIR,
--revision REV, --quiet. The same as `minigpt2 download`; the work is in minigpt2/weights/hub.py
and minigpt2/weights/download.py.
`python download_weights.py 124M --source openai` fetches OpenAI's original TensorFlow release
instead (124M, 355M, 774M, 1558M or gpt2 ... gpt2-xl; minigpt2/weights/openai_release.py).
"""

import sys

from minigpt2.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["download", *sys.argv[1:]]))
