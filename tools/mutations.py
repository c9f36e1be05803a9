"""Plant small, named bugs one at a time in a scratch copy of the repository and check that the
tests catch each: the suite's claims, checked. Run before a release (slow; not part of CI):

    python tools/mutations.py                 # every bug, a table at the end
    python tools/mutations.py gelu_ops amx_bias   # only these
    python tools/mutations.py --list

Each bug is a text substitution (`old` -> `new`) in one file, searched by its code text so that a
function moving to another module is still found: first in the file named, then in every module of
the package; text found nowhere, or in more than one place, is an error that says which bug to
update. The copy's tests run with the interpreter running this script, `-x`, on the test files
named for the bug (the ones that should catch it), with PYTHONPATH pointing at the copy and a
Numba cache of the copy's own (a fresh one for a bug in the engine, see `main`). A bug is
caught when a test fails; MISSED (exit status 1) when they all pass. tests/conftest.py picks the AMX
mode, so the AMX bugs are planted in the emulated kernels on a CPU without AMX.

The GELU and layer norm bugs run only the model-level tests (the model against transformers), not
the per-op unit tests: one wrong constant in an op must show at the model's tolerance too.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_LEVEL = ["tests/test_model_vs_hf.py", "tests/test_heads.py"]


@dataclass
class Bug:
    name: str
    where: str            # the file the text is looked for first (relative to the repository)
    old: str
    new: str
    tests: list           # test files or ids to run (arguments to pytest)
    pytest_args: list = field(default_factory=list)


BUGS = [
    Bug("gelu_ops", "minigpt2/ops.py", "(x + 0.044715 * x ** 3)", "(x + 0.0447 * x ** 3)", MODEL_LEVEL),
    Bug("gelu_engine", "minigpt2/engine/jit.py", "(v + np.float32(0.044715) * v * v * v)",
        "(v + np.float32(0.0447) * v * v * v)", MODEL_LEVEL),
    Bug("layer_norm_eps_ops", "minigpt2/ops.py", "(x - mean) / np.sqrt(var + eps)", "(x - mean) / (np.sqrt(var) + eps)",
        MODEL_LEVEL),
    Bug("layer_norm_eps_engine", "minigpt2/engine/layer_norm_op.py", "rstd = 1.0 / math.sqrt(sq / C + eps)",
        "rstd = 1.0 / (math.sqrt(sq / C) + eps)", MODEL_LEVEL),
    Bug("attention_scale", "minigpt2/model.py", "1.0 / np.sqrt(config.head_dim)", "1.0 / np.sqrt(config.head_dim + 1)",
        ["tests/test_model_vs_hf.py"]),
    Bug("causal_mask_sees_next", "minigpt2/ops.py", "mask = key_index[None, :] <= query_index[:, None]",
        "mask = key_index[None, :] <= query_index[:, None] + 1", ["tests/test_model_vs_hf.py"]),
    Bug("positions_ignore_padding", "minigpt2/inputs.py", "np.maximum(np.cumsum(attention_mask, axis=-1) - 1, 0)",
        "np.maximum(np.cumsum(np.ones_like(attention_mask), axis=-1) - 1, 0)",
        ["tests/test_model_vs_hf.py", "tests/test_padding.py"]),
    Bug("top_p_drops_crossing_token", "minigpt2/generate.py", "n_keep = max(int(np.sum(mass_above < top_p))",
        "n_keep = max(int(np.sum(mass_above + p <= top_p))", ["tests/test_generate.py"]),
    Bug("repetition_penalty_sign", "minigpt2/generate.py",
        "np.where(values < 0, values * penalty, values / penalty)", "values / penalty", ["tests/test_generate.py"]),
    Bug("bpe_highest_rank_first", "minigpt2/tokenizer/gpt2_tokenizer.py", "self._merge_ranks[pair] = rank",
        "self._merge_ranks[pair] = -rank", ["tests/test_tokenizer.py"]),
    Bug("cache_write_offset", "minigpt2/cache.py", "        start = self.length\n",
        "        start = max(self.length - 1, 0)\n", ["tests/test_cache.py"]),
    Bug("cache_reorder_forgets_values", "minigpt2/cache.py", "self.values = [v[beam_idx] for v in self.values]",
        "self.values = self.values", ["tests/test_cache.py"]),
    Bug("cache_copy_shares_keys", "minigpt2/cache.py", "new.keys = [k.copy() for k in self.keys]",
        "new.keys = list(self.keys)", ["tests/test_cache.py"]),
    Bug("cache_crop_off_by_one", "minigpt2/cache.py", "        self.length = length\n",
        "        self.length = max(length - 1, 0)\n", ["tests/test_cache.py"]),
    Bug("safetensors_bounds", "minigpt2/weights/safetensors.py", "if end > data_size:", "if begin > data_size:",
        ["tests/test_safetensors.py"]),
    # the hand-written packing test is left out: the other int8 tests must catch it on their own
    Bug("int8_scale_127_5", "minigpt2/weights/packed.py", "np.abs(rows).max(axis=1) / 127.0",
        "np.abs(rows).max(axis=1) / 127.5", ["tests/test_quantize.py"], ["-k", "not by_hand"]),
    Bug("amx_bias_dropped", "minigpt2/engine/amx.py",
        "out[r0 + r, o0 + o] = sums[o, r] * scale[o0 + o] + bias[o0 + o]",
        "out[r0 + r, o0 + o] = sums[o, r] * scale[o0 + o]", ["tests/test_amx.py"]),
    Bug("amx_leftover_rows_bias_dropped", "minigpt2/engine/amx.py", "out[r, o] = total * scale[o] + bias[o]",
        "out[r, o] = total * scale[o]", ["tests/test_amx.py"]),
    Bug("amx_int8_scale_dropped", "minigpt2/engine/amx.py", "sums[o, r] * scale[o0 + o] + bias[o0 + o]",
        "sums[o, r] + bias[o0 + o]", ["tests/test_amx.py"]),
    Bug("amx_attention_scale_dropped", "minigpt2/engine/amx.py",
        "x[j] = x[j] * scale if row_mask[j] else np.float32(-np.inf)",
        "x[j] = x[j] if row_mask[j] else np.float32(-np.inf)", ["tests/test_amx.py"]),
]


def locate(root, bug):
    """The file under `root` holding bug.old exactly once: bug.where first, then the whole package."""
    first = root / bug.where
    if first.exists() and first.read_text(encoding="utf-8").count(bug.old) == 1:
        return first
    holders = [path for path in sorted((root / "minigpt2").rglob("*.py"))
               if bug.old in path.read_text(encoding="utf-8")]
    if len(holders) != 1 or holders[0].read_text(encoding="utf-8").count(bug.old) != 1:
        found = ", ".join(str(p.relative_to(root)) for p in holders) or "nowhere"
        raise SystemExit(f"bug {bug.name!r}: its code text {bug.old!r} must occur exactly once in the package, "
                         f"found in {found}; the code moved or changed: update BUGS in tools/mutations.py")
    return holders[0]


def run_tests(root, bug, numba_cache):
    """pytest on the bug's tests in the copy -> (ids of the failing tests, seconds, output tail)."""
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(numba_cache)}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rf", *bug.pytest_args,
               *bug.tests]
    start = time.monotonic()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    # "FAILED tests/x.py::test[id with spaces] - message"
    failed = [line.split(" ", 1)[1].split(" - ", 1)[0] for line in result.stdout.splitlines()
              if line.startswith(("FAILED ", "ERROR "))]
    if result.returncode not in (0, 1) and not failed:       # collection error, crash: still caught
        failed = [f"pytest exit status {result.returncode}"]
    return failed, seconds, result.stdout[-2000:] + result.stderr[-2000:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="bugs to plant (default: all)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    parser.add_argument("--verbose", action="store_true", help="print each pytest run's output tail")
    args = parser.parse_args(argv)
    if args.list:
        for bug in BUGS:
            print(f"{bug.name:34} {bug.where}: {bug.old.strip()!r} -> {bug.new.strip()!r}")
        return 0
    unknown = set(args.names) - {bug.name for bug in BUGS}
    if unknown:
        raise SystemExit(f"unknown bug(s) {sorted(unknown)}; see --list")
    chosen = [bug for bug in BUGS if not args.names or bug.name in args.names]
    with tempfile.TemporaryDirectory(prefix="minigpt2-mutations-") as scratch:
        root = Path(scratch) / "repo"
        shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", ".venv", ".pytest_cache"))
        for bug in chosen:                     # every pattern checked before the slow part starts
            locate(root, bug)
        rows = []
        for bug in chosen:
            path = locate(root, bug)
            saved = Path(scratch) / "original"
            shutil.copy2(path, saved)          # with its time stamp, so that Numba's cache stays valid
            path.write_text(saved.read_text(encoding="utf-8").replace(bug.old, bug.new), encoding="utf-8")
            try:
                # Numba's on-disk cache checks only a kernel's own source file, not the files of the
                # functions it calls: a bug in the engine gets a cache of its own, compiled afresh
                engine_bug = path.is_relative_to(root / "minigpt2" / "engine")
                numba_cache = Path(scratch) / (f"numba-{bug.name}" if engine_bug else "numba-shared")
                failed, seconds, tail = run_tests(root, bug, numba_cache)
            finally:
                shutil.copy2(saved, path)
            rows.append((bug.name, str(path.relative_to(root)), ", ".join(failed) or "MISSED", seconds))
            print(f"{bug.name}: {rows[-1][2]} ({seconds:.0f} s)", flush=True)
            if args.verbose:
                print(tail)
    width = max(len(row[0]) for row in rows)
    print(f"\n| {'bug':{width}} | file | caught by | s |\n|{'-' * (width + 2)}|---|---|---|")
    for name, where, caught, seconds in rows:
        print(f"| {name:{width}} | {where} | {caught} | {seconds:.0f} |")
    missed = [row[0] for row in rows if row[2] == "MISSED"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} bugs caught" + (f"; MISSED: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
