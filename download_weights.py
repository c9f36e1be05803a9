"""Download official GPT-2 weights into the minigpt2 cache: `python download_weights.py gpt2 [gpt2-medium ...]`.

With no name it lists the five official models and their sizes. Options: --cache-dir DIR,
--revision REV, --quiet. The same as `minigpt2 download`; the work is in minigpt2/hub.py.
"""

import sys

from minigpt2.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["download", *sys.argv[1:]]))
