"""`python -m lessons`: list the lessons, one line each (the first line of each docstring)."""

import ast
import pkgutil
import sys
from pathlib import Path


def lesson_names():
    """The lesson modules in order: l00_files, l01_bytes_to_unicode, ..."""
    folder = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name[:1] == "l" and m.name[1:3].isdigit())


def main(argv=None):
    print("minigpt2 lessons: rebuild GPT-2 step by step. Run one with `python -m lessons.<name> [--fast]`;")
    print("figures go to lessons/figures/ (--figures DIR). See lessons/README.md.\n")
    for name in lesson_names():
        source = (Path(__file__).resolve().parent / f"{name}.py").read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source)) or ""      # read, not imported: listing is instant
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        summary = summary.split(": ", 1)[-1] if summary.startswith("Lesson") else summary
        print(f"  {name:28s} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
