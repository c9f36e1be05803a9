"""`python -m minigpt2 ...` is the same as the `minigpt2` command."""

from minigpt2.cli import main

raise SystemExit(main())
