"""Speed and memory benchmarks on random GPT-2 checkpoints of the real shapes.

Real weights are not needed to measure speed: a checkpoint with the official shapes and random
values (written by ``write_random_checkpoint`` with the project's own safetensors writer) costs
exactly the same to run. Every backend is measured in a fresh worker process (so its start time
and peak memory are its own), and the workers of different backends take turns, round after
round, so a noisy neighbour on a shared machine slows all of them alike; each cell keeps the best
round. Used by ``benchmarks/bench_forward.py`` and ``minigpt2 bench``.

    python -m minigpt2.bench worker --backend numba --folder F    (one worker; prints JSON)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BACKENDS = ("numpy", "numba", "transformers")
PROMPT_TOKENS = 16                # the decode benchmark's prompt length


# ---------------------------------------------------------------------------------- checkpoints

def default_folder(model="gpt2"):
    """Where random checkpoints are kept between runs: ~/.cache/minigpt2/bench/<model>-random."""
    from .hub import minigpt2_cache_dir
    return minigpt2_cache_dir() / "bench" / f"{model}-random"


def write_random_checkpoint(folder, model="gpt2", seed=0, std=0.02):
    """Write config.json + model.safetensors for the preset `model` with N(0, std) weights.

    Layer norms get weight 1 and bias 0, as freshly initialised GPT-2. The tensors are generated
    into a scratch memory map next to the output, so even gpt2-xl (6.2 GB) never sits in RAM.
    Does nothing if the folder already holds a checkpoint of this model. Returns the folder.
    """
    from .checkpoints import expected_body_shapes
    from .config import PRESETS, GPT2Config
    from .safetensors import save_file

    if model not in PRESETS:
        raise ValueError(f"model must be one of {sorted(PRESETS)}, got {model!r}")
    folder = Path(folder)
    weights_path = folder / "model.safetensors"
    marker = folder / "random_checkpoint.json"
    if weights_path.exists() and marker.exists() and json.loads(marker.read_text()) == {"model": model, "seed": seed}:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = GPT2Config(**PRESETS[model])
    config.save_pretrained(folder)
    shapes = expected_body_shapes(config)
    total = sum(int(np.prod(shape)) for shape in shapes.values())
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(dir=folder) as scratch_dir:
        scratch = np.memmap(Path(scratch_dir) / "scratch.f32", dtype=np.float32, mode="w+", shape=(total,))
        tensors, offset = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            view = scratch[offset:offset + size].reshape(shape)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                view[...] = 1.0
            elif name.endswith(("ln_1.bias", "ln_2.bias", "ln_f.bias")):
                view[...] = 0.0
            else:
                flat = view.reshape(-1)
                for start in range(0, size, 1 << 24):          # 64 MB at a time
                    chunk = flat[start:start + (1 << 24)]
                    chunk[...] = rng.standard_normal(chunk.shape, dtype=np.float32) * np.float32(std)
            tensors[name] = view
            offset += size
        save_file(tensors, weights_path)
        del tensors, view, scratch
    marker.write_text(json.dumps({"model": model, "seed": seed}))
    return folder


# ---------------------------------------------------------------------------------- one worker

def _peak_rss_mb():
    """Peak resident memory of this process (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Runner:
    """prefill(ids) -> last-position logits; decode(prompt, n) -> seconds for n greedy steps."""

    def __init__(self, backend, folder, threads):
        self.backend = backend
        if backend == "transformers":
            import torch
            from transformers import GPT2LMHeadModel as HFModel
            torch.set_num_threads(threads)
            self.torch = torch
            self.model = HFModel.from_pretrained(folder, dtype=torch.float32).eval()
        else:
            from . import kernels
            from .model import GPT2LMHeadModel
            kernels.set_num_threads(threads)     # both Numba's and BLAS's pools (numpy uses BLAS too)
            self.model = GPT2LMHeadModel.from_pretrained(folder, backend=backend)

    def prefill(self, ids):
        """ids [1, t] -> logits of the last position [vocab]."""
        if self.backend == "transformers":
            with self.torch.inference_mode():
                return self.model(self.torch.from_numpy(ids), logits_to_keep=1).logits[0, -1].numpy()
        return self.model(ids, logits_to_keep=1).logits[0, -1]

    def decode(self, ids, n_new):
        """Prefill ids [1, t] with a cache, then n_new greedy steps; returns (seconds for the steps, tokens)."""
        tokens = []
        if self.backend == "transformers":
            torch = self.torch
            with torch.inference_mode():
                out = self.model(torch.from_numpy(ids), use_cache=True, logits_to_keep=1)
                start = time.perf_counter()
                for _ in range(n_new):
                    next_id = out.logits[:, -1].argmax(-1, keepdim=True)
                    tokens.append(int(next_id))
                    out = self.model(next_id, past_key_values=out.past_key_values, use_cache=True)
                return time.perf_counter() - start, tokens
        out = self.model(ids, use_cache=True, logits_to_keep=1)
        start = time.perf_counter()
        for _ in range(n_new):
            next_id = out.logits[:, -1].argmax(-1)[:, None]
            tokens.append(int(next_id[0, 0]))
            out = self.model(next_id, past_key_values=out.past_key_values, use_cache=True)
        return time.perf_counter() - start, tokens


def run_worker(backend, folder, lengths, new_tokens, repeats, threads, launched_at=None, only_start=False):
    """Measure one backend in this process; returns a dict of results (times in seconds)."""
    t_import = time.perf_counter()
    runner = _Runner(backend, folder, threads)
    load_s = time.perf_counter() - t_import
    vocab = 50257
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, size=(1, PROMPT_TOKENS))
    # first call: a 16-token prompt and one decode step (the Numba kernels compile or load here)
    t0 = time.perf_counter()
    runner.decode(prompt, 1)
    first_call_s = time.perf_counter() - t0
    result = {"backend": backend, "load_s": load_s, "first_call_s": first_call_s}
    if launched_at is not None:
        result["start_to_first_token_s"] = time.time() - launched_at
    if only_start:
        t0 = time.perf_counter()
        runner.decode(prompt, 1)
        result["second_call_s"] = time.perf_counter() - t0
        result["peak_rss_mb"] = _peak_rss_mb()
        return result
    prefill = {}
    for length in lengths:
        ids = rng.integers(0, vocab, size=(1, length))
        runner.prefill(ids)                                   # warm up this shape
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner.prefill(ids)
            best = min(best, time.perf_counter() - t0)
        prefill[str(length)] = length / best
    result["prefill_tok_s"] = prefill
    if new_tokens:
        best, tokens = float("inf"), None
        for _ in range(max(1, repeats - 1)):
            seconds, tokens = runner.decode(prompt, new_tokens)
            best = min(best, seconds)
        result["decode_tok_s"] = new_tokens / best
        result["decode_tokens"] = tokens
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _worker_cli(argv):
    parser = argparse.ArgumentParser(prog="python -m minigpt2.bench worker")
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--lengths", type=int, nargs="*", default=[])
    parser.add_argument("--new-tokens", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--launched-at", type=float, default=None)
    parser.add_argument("--only-start", action="store_true")
    args = parser.parse_args(argv)
    result = run_worker(args.backend, args.folder, args.lengths, args.new_tokens, args.repeats,
                        args.threads, args.launched_at, args.only_start)
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------- the whole run

def _spawn(backend, folder, numba_cache_dir, **options):
    """Run one worker in a fresh Python process and return its result dict."""
    command = [sys.executable, "-m", "minigpt2.bench", "worker", "--backend", backend, "--folder", str(folder)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            command.append(flag)
        elif isinstance(value, (list, tuple)):
            command += [flag] + [str(v) for v in value]
        elif value is not None and value is not False:
            command += [flag, str(value)]
    # The workers get their own Numba cache folder, so the first one measures a real compile and
    # the later ones a warm cache, whatever the state of the package's own cache.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache_dir))
    launched_at = time.time()
    completed = subprocess.run(command + ["--launched-at", repr(launched_at)], env=env,
                               capture_output=True, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark worker {backend} failed:\n{completed.stderr[-3000:]}")


def transformers_available():
    try:
        import importlib.util
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    except (ImportError, ValueError):
        return False


def run_benchmark(folder, backends, lengths, new_tokens, repeats=2, rounds=2, threads=2, log=print):
    """Measure every backend on the checkpoint in `folder`; returns {backend: merged results}."""
    results = {backend: {} for backend in backends}          # keeps the column order
    with tempfile.TemporaryDirectory(prefix="minigpt2-numba-cache-") as numba_cache_dir:
        if "numba" in backends:
            log("numba: first process (empty Numba cache: compiles every kernel)")
            cold = _spawn("numba", folder, numba_cache_dir, only_start=True, threads=threads)
            log("numba: second process (warm cache)")
            warm = _spawn("numba", folder, numba_cache_dir, only_start=True, threads=threads)
            results["numba"].update(compile_s=cold["first_call_s"] - cold["second_call_s"],
                                    start_s=warm["start_to_first_token_s"])
        for backend in backends:
            if backend != "numba":
                log(f"{backend}: start time")
                start = _spawn(backend, folder, numba_cache_dir, only_start=True, threads=threads)
                results[backend]["start_s"] = start["start_to_first_token_s"]
        for round_index in range(rounds):
            for backend in backends:
                log(f"round {round_index + 1}/{rounds}: {backend}")
                r = _spawn(backend, folder, numba_cache_dir, lengths=lengths, new_tokens=new_tokens,
                           repeats=repeats, threads=threads)
                merged = results[backend]
                merged["peak_rss_mb"] = max(merged.get("peak_rss_mb", 0.0), r["peak_rss_mb"])
                prefill = merged.setdefault("prefill_tok_s", {})
                for length, value in r["prefill_tok_s"].items():
                    prefill[length] = max(prefill.get(length, 0.0), value)
                if "decode_tok_s" in r:
                    merged["decode_tok_s"] = max(merged.get("decode_tok_s", 0.0), r["decode_tok_s"])
                    merged["decode_tokens"] = r["decode_tokens"]
    return results


def format_table(results, lengths, new_tokens):
    """Markdown table: one row per measurement, one column per backend (+ ratios vs transformers)."""
    backends = list(results)
    ref = results.get("transformers")
    header = "| | " + " | ".join(backends) + (" | numba / transformers |" if ref and "numba" in results else " |")
    lines = [header, "|---|" + "---:|" * (len(backends) + (1 if ref and "numba" in results else 0))]

    def row(label, getter, fmt, ratio=True):
        cells = []
        for b in backends:
            value = getter(results[b])
            cells.append(fmt.format(value) if value is not None else "–")
        if ref and "numba" in results:
            a, r = getter(results["numba"]), getter(ref)
            cells.append(f"{a / r:.2f}x" if ratio and a and r else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for length in lengths:
        row(f"prefill {length} tok/s", lambda r, k=str(length): r.get("prefill_tok_s", {}).get(k), "{:,.0f}")
    if new_tokens:
        row(f"decode tok/s ({PROMPT_TOKENS}-token prompt, {new_tokens} new)", lambda r: r.get("decode_tok_s"), "{:.1f}")
    row("Numba compile, first process (s)", lambda r: r.get("compile_s"), "{:.1f}", ratio=False)
    row("start to first token, fresh process (s)", lambda r: r.get("start_s"), "{:.2f}", ratio=False)
    row("peak RSS (MB)", lambda r: r.get("peak_rss_mb"), "{:,.0f}", ratio=False)
    return "\n".join(lines)


def machine_description():
    """One line: CPU model, cores, Python/NumPy/Numba versions."""
    import platform
    import numba
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy {np.__version__}, "
            f"Numba {numba.__version__}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker_cli(sys.argv[2:])
    else:
        print(__doc__)
