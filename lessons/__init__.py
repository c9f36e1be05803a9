"""Lessons: rebuild GPT-2 step by step. `python -m lessons` lists them."""
