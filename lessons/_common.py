"""What every lesson shares: arguments, the model choice, fixtures, figures and `check`.

A lesson is `main(argv) -> 0`; its last lines call `check(...)`, which prints PASS or FAIL with
the maximum absolute and relative difference, and on FAIL raises SystemExit(1), so a wrong piece
fails loudly both from the command line and in tests/test_lessons.py.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LESSONS_DIR = Path(__file__).resolve().parent
REPO_ROOT = LESSONS_DIR.parent
REFERENCES_DIR = LESSONS_DIR / "references"           # made by lessons/make_references.py
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "models"   # made by tests/fixtures/make_fixtures.py
DEFAULT_FIGURES_DIR = LESSONS_DIR / "figures"


# ---- arguments -----------------------------------------------------------------------------------

def parse_args(doc, argv=None, add_arguments=None):
    """The options every lesson takes: --fast, --figures DIR, --no-figures, --model."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small settings (used by the tests)")
    parser.add_argument("--figures", default=str(DEFAULT_FIGURES_DIR), metavar="DIR",
                        help="folder for the PNG figures (default lessons/figures/)")
    parser.add_argument("--no-figures", action="store_true", help="do not draw figures")
    parser.add_argument("--model", default="auto",
                        help="'auto' (real gpt2 if cached, else the bundled tiny-shakespeare, "
                             "else random weights), 'random', a model name or a folder")
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args(argv)


def title(text):
    print(f"\n== {text} " + "=" * max(0, 76 - len(text)))


# ---- checks ----------------------------------------------------------------------------------------

class Failed(SystemExit):
    """A check failed (a SystemExit with code 1, so `python -m lessons.lNN` exits non-zero)."""

    def __init__(self, message):
        super().__init__(1)
        self.message = message


def check(name, ours, reference, tol=1e-5, relative=False):
    """PASS if max|ours - reference| <= tol (or, with relative=True, max|diff| / max|ref| <= tol).

    Prints both differences either way; a shape mismatch is a FAIL, never a broadcast."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        return _fail(name, f"shape {ours.shape} != reference shape {reference.shape}")
    diff = np.abs(ours - reference)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / max(float(np.abs(reference).max()) if reference.size else 0.0, 1e-30)
    measured = max_rel if relative else max_abs
    ok = bool(np.isfinite(measured) and measured <= tol)
    line = (f"max abs diff {max_abs:.3g}, max rel diff {max_rel:.3g} "
            f"({'rel' if relative else 'abs'} tol {tol:g})")
    if not ok:
        return _fail(name, line)
    print(f"PASS  {name}: {line}")
    return max_abs


def check_equal(name, ours, reference):
    """PASS if the two are equal (ids, strings, bytes); prints the first difference otherwise."""
    if _as_plain(ours) == _as_plain(reference):
        print(f"PASS  {name}: equal ({_short(_as_plain(ours))})")
        return
    ours, reference = _as_plain(ours), _as_plain(reference)
    where = ""
    if isinstance(ours, list) and isinstance(reference, list):
        first = next((i for i, (a, b) in enumerate(zip(ours, reference)) if a != b),
                     min(len(ours), len(reference)))
        where = f" first difference at index {first};"
    _fail(name, f"{where} got {_short(ours)}, expected {_short(reference)}")


def check_true(name, condition, detail=""):
    if not condition:
        _fail(name, detail or "condition is false")
    print(f"PASS  {name}{': ' + detail if detail else ''}")


def _fail(name, detail):
    print(f"FAIL  {name}: {detail}")
    raise Failed(f"{name}: {detail}")


def _as_plain(x):
    """Arrays and tuples -> lists, recursively, so that == compares values."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_as_plain(item) for item in x]
    if isinstance(x, dict):
        return {key: _as_plain(value) for key, value in x.items()}
    return x.item() if isinstance(x, np.generic) else x


def _short(x, n=120):
    text = repr(x)
    return text if len(text) <= n else text[: n - 3] + "..."


def skipped(message):
    """A check that cannot run here: say so plainly (exit 0, never a fake PASS)."""
    print(f"SKIPPED  {message}")


# ---- references ----------------------------------------------------------------------------------

def fixture(name="tiny"):
    """(folder, reference arrays) of one model fixture made by transformers (tests/fixtures)."""
    folder = FIXTURES_DIR / name
    return folder, dict(np.load(folder / "reference.npz"))


def fixture_weights(name="tiny"):
    """(config, body weights as float32 with unprefixed names, reference arrays) of a fixture."""
    from minigpt2.weights.checkpoints import load_weights
    from minigpt2.config import GPT2Config

    folder, reference = fixture(name)
    config = GPT2Config.from_pretrained(folder)
    body, _ = load_weights(folder, config)
    return config, {k: np.asarray(v, np.float32) for k, v in body.items()}, reference


def reference_json(name):
    return json.loads((REFERENCES_DIR / name).read_text(encoding="utf-8"))


def reference_npz(name):
    return dict(np.load(REFERENCES_DIR / name))


# ---- the model the lessons show ------------------------------------------------------------------

def random_weights(config, seed=0):
    """GPT-2 weights at O(1) scale (not transformers' std 0.02, which hides mistakes), HF names."""
    rng = np.random.default_rng(seed)
    c, inner = config.n_embd, config.inner_dim
    normal = lambda *shape, scale=1.0: (scale * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    weights = {"wte.weight": normal(config.vocab_size, c, scale=0.5),
               "wpe.weight": normal(config.n_positions, c, scale=0.5),
               "ln_f.weight": 1 + normal(c, scale=0.1), "ln_f.bias": normal(c, scale=0.1)}
    for i in range(config.n_layer):
        for name, shape in [("attn.c_attn", (c, 3 * c)), ("attn.c_proj", (c, c)),
                            ("mlp.c_fc", (c, inner)), ("mlp.c_proj", (inner, c))]:
            weights[f"h.{i}.{name}.weight"] = normal(*shape, scale=shape[0] ** -0.5)
            weights[f"h.{i}.{name}.bias"] = normal(shape[1], scale=0.1)
        for name in ("ln_1", "ln_2"):
            weights[f"h.{i}.{name}.weight"] = 1 + normal(c, scale=0.1)
            weights[f"h.{i}.{name}.bias"] = normal(c, scale=0.1)
    return weights


def model_folder(args):
    """(folder, description) of the model to show, or (None, description) for random weights.

    auto: real GPT-2 (124M) if it is in a local cache, else the bundled demo model
    tiny-shakespeare, else random weights with GPT-2's vocabulary (the text is then gibberish,
    but every shape and check still means something). Nothing is downloaded.
    """
    from minigpt2.weights import hub

    candidates = {"auto": ["gpt2", "tiny-shakespeare"], "random": []}.get(args.model, [args.model])
    for name in candidates:
        try:
            folder = hub.resolve_model_folder(name, local_files_only=True)
        except (OSError, ValueError) as error:
            if args.model != "auto":
                raise SystemExit(f"--model {name}: {error}")
            print(f"[model] {name}: not available offline")
            continue
        what = {"gpt2": "REAL GPT-2 weights", "tiny-shakespeare": "the bundled demo model"}.get(name, "the model")
        print(f"[model] {name}: {folder}")
        return Path(folder), f"{what} {name}"
    return None, "RANDOM weights (no real or demo model found): the text will be gibberish"


def load_model(args, backend="numpy"):
    """(model, tokenizer, description): the model a lesson shows text with (see model_folder)."""
    from minigpt2.config import GPT2Config
    from minigpt2.model import GPT2LMHeadModel
    from minigpt2.tokenizer import GPT2Tokenizer

    folder, description = model_folder(args)
    print(f"[model] using {description}")
    if folder is not None:
        return (GPT2LMHeadModel.from_pretrained(folder, backend=backend),
                GPT2Tokenizer.from_pretrained(folder), description)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=256)
    model = GPT2LMHeadModel(config, random_weights(config), backend=backend)
    return model, GPT2Tokenizer.from_pretrained("gpt2"), description


# ---- figures ---------------------------------------------------------------------------------------

def visible(token_text):
    """A token's text for a plot label: newlines and tabs written out, so they do not vanish."""
    return token_text.replace("\n", "\\n").replace("\t", "\\t")


def figure_path(args, filename):
    """Where to save a figure, or None with --no-figures. Creates the folder."""
    if args.no_figures:
        return None
    folder = Path(args.figures)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / filename


def pyplot():
    import matplotlib
    matplotlib.use("Agg")                 # files only, no window
    import matplotlib.pyplot as plt
    return plt


def save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    print(f"[figure] {path}")


def run(main):
    """`if __name__ == "__main__": run(main)`: exit with main's code."""
    sys.exit(main())
