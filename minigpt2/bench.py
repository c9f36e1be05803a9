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
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BACKENDS = ("numpy", "numba", "transformers")
PROMPT_TOKENS = 16                # the decode benchmark's prompt length
LONG_PROMPT_TOKENS = 512          # ... and the long-context decode's (32 steps after it)


# ---------------------------------------------------------------------------------- checkpoints

def default_folder(model="gpt2"):
    """Where random checkpoints are kept between runs: ~/.cache/minigpt2/bench/<model>-random."""
    from minigpt2.weights.hub import minigpt2_cache_dir
    return minigpt2_cache_dir() / "bench" / f"{model}-random"


def write_random_checkpoint(folder, model="gpt2", seed=0, std=0.02, config=None):
    """Write config.json + model.safetensors for the preset `model` with N(0, std) weights.

    `config` (a GPT2Config) replaces the preset, for small test models.

    Layer norms get weight 1 and bias 0, as freshly initialised GPT-2. The tensors are generated
    into a scratch memory map next to the output, so even gpt2-xl (6.2 GB) never sits in RAM.
    Does nothing if the folder already holds a checkpoint of this model. Returns the folder.
    """
    from minigpt2.weights.checkpoints import expected_body_shapes
    from minigpt2.config import PRESETS, GPT2Config
    from minigpt2.weights.safetensors import save_file

    if config is None and model not in PRESETS:
        raise ValueError(f"model must be one of {sorted(PRESETS)}, got {model!r}")
    folder = Path(folder)
    weights_path = folder / "model.safetensors"
    marker = folder / "random_checkpoint.json"
    if weights_path.exists() and marker.exists() and json.loads(marker.read_text()) == {"model": model, "seed": seed}:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else GPT2Config(**PRESETS[model])
    # as transformers' save_pretrained writes it: converters (llama.cpp's) read the class from here
    config.extra.setdefault("architectures", ["GPT2LMHeadModel"])
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

def _status_mb(field):
    """A memory figure of this process from /proc/self/status, in MB: "VmRSS" (now), "VmHWM" (peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def best_seconds(function, repeats):
    """Call function once to warm up (compile, first-touch memory), then keep the fastest of `repeats` calls."""
    function()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - t0)
    return best


class _Runner:
    """prefill(ids) -> last-position logits; decode(prompt, n) -> (seconds of each greedy step, tokens)."""

    def __init__(self, backend, folder, threads, dtype="float32", matmul_precision="highest"):
        self.backend = backend
        if backend == "transformers":
            import torch
            from transformers import GPT2LMHeadModel as HFModel
            torch.set_num_threads(threads)
            torch.set_float32_matmul_precision(matmul_precision)
            self.torch = torch
            torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
            self.model = HFModel.from_pretrained(folder, dtype=torch_dtype).eval()
        else:
            from minigpt2 import engine
            from minigpt2.model import GPT2LMHeadModel
            from minigpt2.quantize import convert_model
            engine.set_num_threads(threads)     # both Numba's and BLAS's pools (numpy uses BLAS too)
            engine.set_float32_matmul_precision(matmul_precision)
            self.model = convert_model(GPT2LMHeadModel.from_pretrained(folder, backend=backend), dtype)

    def prefill(self, ids):
        """ids [b, t] -> logits of the last position [b, vocab]."""
        if self.backend == "transformers":
            with self.torch.inference_mode():
                return self.model(self.torch.from_numpy(ids), logits_to_keep=1).logits[:, -1].float().numpy()
        return self.model(ids, logits_to_keep=1).logits[:, -1]

    def decode(self, ids, n_new):
        """Prefill ids [b, t] with a cache, then n_new greedy steps for every row.

        Returns (the seconds of each step, the first row's tokens)."""
        tokens = []
        if self.backend == "transformers":
            torch = self.torch
            with torch.inference_mode():
                out = self.model(torch.from_numpy(ids), use_cache=True, logits_to_keep=1)
                steps = []
                for _ in range(n_new):
                    start = time.perf_counter()
                    next_id = out.logits[:, -1].argmax(-1, keepdim=True)
                    tokens.append(int(next_id[0, 0]))
                    out = self.model(next_id, past_key_values=out.past_key_values, use_cache=True)
                    steps.append(time.perf_counter() - start)
                return steps, tokens
        out = self.model(ids, use_cache=True, logits_to_keep=1)
        steps = []
        for _ in range(n_new):
            start = time.perf_counter()
            next_id = out.logits[:, -1].argmax(-1)[:, None]
            tokens.append(int(next_id[0, 0]))
            out = self.model(next_id, past_key_values=out.past_key_values, use_cache=True)
            steps.append(time.perf_counter() - start)
        return steps, tokens


def run_worker(backend, folder, lengths, new_tokens, repeats, threads, dtype="float32", batch=1,
               launched_at=None, only_start=False, matmul_precision="highest"):
    """Measure one configuration in this process; returns a dict of results (times in seconds)."""
    t_load = time.perf_counter()
    runner = _Runner(backend, folder, threads, dtype, matmul_precision)
    result = {"backend": backend, "dtype": dtype, "batch": batch,
              "load_s": time.perf_counter() - t_load, "rss_after_load_mb": _status_mb("VmRSS")}
    vocab = 50257 if backend == "transformers" else runner.model.config.vocab_size
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, size=(batch, PROMPT_TOKENS))
    # first call: a 16-token prompt and one decode step (the Numba kernels compile or load here)
    t0 = time.perf_counter()
    runner.decode(prompt, 1)
    result["first_call_s"] = time.perf_counter() - t0
    if launched_at is not None:
        result["start_to_first_token_s"] = time.time() - launched_at
    if only_start:
        t0 = time.perf_counter()
        runner.decode(prompt, 1)
        result["second_call_s"] = time.perf_counter() - t0
        result["peak_rss_mb"] = _status_mb("VmHWM")
        return result
    prefill = {}
    for length in lengths:
        ids = rng.integers(0, vocab, size=(batch, length))
        prefill[str(length)] = batch * length / best_seconds(lambda: runner.prefill(ids), repeats)
    result["prefill_tok_s"] = prefill
    if new_tokens:
        # Two figures: all steps (tokens / total seconds, best run) and the median step, which a
        # busy machine disturbs less (other processes stall some steps, not the typical one).
        best, median, tokens = float("inf"), float("inf"), None
        for _ in range(max(1, repeats - 1)):
            steps, tokens = runner.decode(prompt, new_tokens)
            best, median = min(best, sum(steps)), min(median, float(np.median(steps)))
        result["decode_tok_s"] = batch * new_tokens / best
        result["decode_median_tok_s"] = batch / median
        result["decode_tokens"] = tokens
        # the same at a long context: attention over 512+ cached tokens is no longer negligible
        long_tokens = min(LONG_PROMPT_TOKENS, runner.model.config.n_positions - 33)   # small test models
        steps, _ = runner.decode(rng.integers(0, vocab, size=(batch, long_tokens)), 32)
        result["decode_long_median_tok_s"] = batch / float(np.median(steps))
    result["peak_rss_mb"] = _status_mb("VmHWM")
    result["rss_mb"] = _status_mb("VmRSS")
    return result


def measure_bandwidth(threads, megabytes=512, repeats=5):
    """Memory bandwidth a decode step can use, in GB/s: {"numba": ..., "blas": ...}.

    A decode step is a chain of matrix-vector products whose weights come from DRAM, so the
    speed of one product over a matrix far larger than the caches is the ceiling for decoding:
    "numba" is the engine's own float32 kernel (matvec.matvec_out_in, with prefetching),
    "blas" is NumPy's BLAS sgemv on the same matrix. Best of `repeats`.
    """
    from minigpt2.engine import matvec, policy
    policy.set_num_threads(threads)
    n_in = 768
    n_out = megabytes * 1_000_000 // (4 * n_in)
    matrix = np.full((n_out, n_in), 0.01, dtype=np.float32)       # [n_out, n_in], touched once
    x = np.ones((1, n_in), dtype=np.float32)
    bias = np.zeros(n_out, dtype=np.float32)
    scale = np.ones(n_out, dtype=np.float32)                       # float32 weights: no scale
    out = np.empty((1, n_out), dtype=np.float32)
    numba_s = best_seconds(lambda: matvec.matvec_out_in[False](x, matrix, scale, bias, False, out), repeats)
    blas_s = best_seconds(lambda: np.matmul(matrix, x[0], out=out[0]), repeats)
    return {"numba": matrix.nbytes / numba_s / 1e9, "blas": matrix.nbytes / blas_s / 1e9}


def _worker_cli(argv):
    parser = argparse.ArgumentParser(prog="python -m minigpt2.bench worker")
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--matmul-precision", default="highest")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--lengths", type=int, nargs="*", default=[])
    parser.add_argument("--new-tokens", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--launched-at", type=float, default=None)
    parser.add_argument("--only-start", action="store_true")
    parser.add_argument("--bandwidth", action="store_true", help="measure memory bandwidth only")
    args = parser.parse_args(argv)
    if args.bandwidth:
        print("RESULT " + json.dumps(measure_bandwidth(args.threads)), flush=True)
        return
    result = run_worker(args.backend, args.folder, args.lengths, args.new_tokens, args.repeats,
                        args.threads, args.dtype, args.batch, args.launched_at, args.only_start,
                        args.matmul_precision)
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------- the whole run

def _spawn(spec, numba_cache_dir, **options):
    """Run one worker for spec = {backend, folder, dtype, batch} in a fresh Python process."""
    command = [sys.executable, "-m", "minigpt2.bench", "worker"]
    for name, value in {**spec, **options}.items():
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
    raise RuntimeError(f"benchmark worker {spec} failed:\n{completed.stderr[-3000:]}")


def run_llama_bench(spec, lengths, new_tokens, repeats, threads):
    """One llama.cpp column: `llama-bench` on spec["gguf"] (spec["llama_bench"] is the binary), in
    the same shape as a worker's result. Decode runs after a PROMPT_TOKENS-token context (-d), as
    ours does; llama.cpp reports the mean over its repetitions, which stands in for our median step."""
    tests = [["-p", str(n), "-n", "0"] for n in lengths]
    if new_tokens:
        tests.append(["-p", "0", "-n", str(new_tokens), "-d", str(PROMPT_TOKENS)])
    result = {"prefill_tok_s": {}, "peak_rss_mb": 0.0, "rss_mb": 0.0, "load_s": float("nan"),
              "rss_after_load_mb": float("nan")}
    for test in tests:
        completed = subprocess.run([spec["llama_bench"], "-m", spec["gguf"], "-t", str(threads), "-r", str(repeats),
                                    "-o", "json", *test], capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"llama-bench {' '.join(test)} on {spec['gguf']} failed:\n{completed.stderr[-2000:]}")
        entry = json.loads(completed.stdout)[0]
        if entry["n_gen"]:
            result["decode_tok_s"] = result["decode_median_tok_s"] = entry["avg_ts"]
        else:
            result["prefill_tok_s"][str(entry["n_prompt"])] = entry["avg_ts"]
    return result


def run_columns(columns, lengths, new_tokens, repeats=2, rounds=2, threads=2, start_times=False,
                numba_cache_dir=None, log=print):
    """Measure each column {label: spec}; the columns take turns, `rounds` times, best kept.

    spec = {"backend", "folder", "dtype", "batch"} and optionally "matmul_precision" (both
    engines' set_float32_matmul_precision; "highest" if absent); or {"backend": "llama.cpp", "gguf",
    "llama_bench"} for llama.cpp's own benchmark on the same weights. With start_times, each column first gets a
    start-time worker (and numba columns a cold-cache compile measurement, once).
    Returns {label: merged results}.
    """
    results = {label: {} for label in columns}                # keeps the column order
    with tempfile.TemporaryDirectory(prefix="minigpt2-numba-cache-") as fresh_dir:
        cache_dir = numba_cache_dir or fresh_dir
        if start_times:
            compiled = False
            for label, spec in columns.items():
                if spec["backend"] == "numba" and not compiled:
                    log(f"{label}: first process (empty Numba cache: compiles every kernel)")
                    cold = _spawn(spec, cache_dir, only_start=True, threads=threads)
                    results[label]["compile_s"] = cold["first_call_s"] - cold["second_call_s"]
                    compiled = True
                log(f"{label}: start time (fresh process)")
                start = _spawn(spec, cache_dir, only_start=True, threads=threads)
                results[label]["start_s"] = start["start_to_first_token_s"]
        for round_index in range(rounds):
            for label, spec in columns.items():
                log(f"round {round_index + 1}/{rounds}: {label}")
                if spec["backend"] == "llama.cpp":
                    r = run_llama_bench(spec, lengths, new_tokens, repeats, threads)
                else:
                    r = _spawn(spec, cache_dir, lengths=lengths, new_tokens=new_tokens,
                               repeats=repeats, threads=threads)
                merged = results[label]
                for key in ("peak_rss_mb", "rss_mb"):
                    merged[key] = max(merged.get(key, 0.0), r[key])
                merged["load_s"] = min(merged.get("load_s", float("inf")), r["load_s"])
                merged["rss_after_load_mb"] = min(merged.get("rss_after_load_mb", float("inf")),
                                                  r["rss_after_load_mb"])
                prefill = merged.setdefault("prefill_tok_s", {})
                for length, value in r["prefill_tok_s"].items():
                    prefill[length] = max(prefill.get(length, 0.0), value)
                if "decode_tok_s" in r:
                    merged["decode_tok_s"] = max(merged.get("decode_tok_s", 0.0), r["decode_tok_s"])
                    merged["decode_median_tok_s"] = max(merged.get("decode_median_tok_s", 0.0),
                                                        r["decode_median_tok_s"])
                    merged["decode_tokens"] = r.get("decode_tokens", new_tokens)
                    if "decode_long_median_tok_s" in r:           # (llama.cpp columns do not measure it)
                        merged["decode_long_median_tok_s"] = max(merged.get("decode_long_median_tok_s", 0.0),
                                                                 r["decode_long_median_tok_s"])
    return results


def streamed_bytes_per_token(model, dtype):
    """Weight bytes one decode step reads: every block matrix and the LM head (wte), once."""
    from minigpt2.config import PRESETS, GPT2Config
    from minigpt2.weights.packed import BYTES_PER_WEIGHT
    config = GPT2Config(**PRESETS[model])
    c, inner = config.n_embd, config.inner_dim
    matrices = config.n_layer * (c * 3 * c + c * c + 2 * c * inner) + config.vocab_size * c
    scales = config.n_layer * (3 * c + c + inner + c) + config.vocab_size if dtype == "int8" else 0
    return matrices * BYTES_PER_WEIGHT[dtype] + scales * 4


def run_bandwidth(threads=2):
    """measure_bandwidth in a fresh worker process (so it has the machine's caches to itself)."""
    return _spawn({"backend": "numba", "folder": "-"}, tempfile.gettempdir(), bandwidth=True, threads=threads)


def ceiling_line(bandwidth, bytes_per_token):
    """One sentence: the measured bandwidth and the decode tok/s it allows for each weight size.

    bytes_per_token: {label: weight bytes one decode step streams}."""
    best = max(bandwidth.values())
    ceilings = ", ".join(f"{label} {best / (nbytes / 1e9):.0f}" for label, nbytes in bytes_per_token.items())
    return (f"Memory bandwidth measured in this run: {bandwidth['numba']:.1f} GB/s (the engine's float32 "
            f"matrix-vector kernel) and {bandwidth['blas']:.1f} GB/s (NumPy's BLAS sgemv), 512 MB "
            f"matrix. Decode ceiling at {best:.1f} GB/s, tok/s: {ceilings}.")


def run_benchmark(folder, backends, lengths, new_tokens, repeats=2, rounds=2, threads=2, log=print,
                  dtype="float32", batch=1):
    """The forward table: one column per backend on the checkpoint in `folder`."""
    columns = {backend: {"backend": backend, "folder": str(folder), "dtype": dtype, "batch": batch}
               for backend in backends}
    return run_columns(columns, lengths, new_tokens, repeats, rounds, threads, start_times=True, log=log)


def transformers_available():
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    except (ImportError, ValueError):
        return False


def format_table(results, lengths, new_tokens, compare=("numba", "transformers"), batch=1):
    """Markdown table: one row per measurement, one column per configuration, and a ratio
    column compare[0] / compare[1] when both are present (rows where higher is better)."""
    labels = list(results)
    ratio = compare if compare and all(c in results for c in compare) else None
    lines = ["| | " + " | ".join(labels) + (f" | {ratio[0]} / {ratio[1]} |" if ratio else " |"),
             "|---|" + "---:|" * (len(labels) + bool(ratio))]

    def row(label, getter, fmt, higher_is_better=True):
        values = [getter(results[name]) for name in labels]
        if all(v is None for v in values):
            return
        cells = [fmt.format(v) if v is not None else "–" for v in values]
        if ratio:
            a, b = getter(results[ratio[0]]), getter(results[ratio[1]])
            cells.append(f"{a / b:.2f}x" if higher_is_better and a and b else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for length in lengths:
        row(f"prefill {length} tok/s", lambda r, k=str(length): r.get("prefill_tok_s", {}).get(k), "{:,.0f}")
    if new_tokens:
        what = f"batch {batch}, " if batch != 1 else ""
        row(f"decode tok/s ({what}{PROMPT_TOKENS}-token prompt, {new_tokens} new)",
            lambda r: r.get("decode_tok_s"), "{:.1f}")
        row("decode tok/s, median step", lambda r: r.get("decode_median_tok_s"), "{:.1f}")
        row(f"decode tok/s, median step, {LONG_PROMPT_TOKENS}-token prompt (32 new)",
            lambda r: r.get("decode_long_median_tok_s"), "{:.1f}")
    row("Numba compile, first process (s)", lambda r: r.get("compile_s"), "{:.1f}", False)
    row("start to first token, fresh process (s)", lambda r: r.get("start_s"), "{:.2f}", False)
    row("load (s)", lambda r: r.get("load_s"), "{:.2f}", False)
    row("RSS after load (MB)", lambda r: r.get("rss_after_load_mb"), "{:,.0f}", False)
    row("peak RSS (MB)", lambda r: r.get("peak_rss_mb"), "{:,.0f}", False)
    return "\n".join(lines)


def machine_description():
    """One line: CPU model and the vector features the kernels care about, cores, versions."""
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
    from minigpt2.engine import cpu as host
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = [f for f in ("avx2", "f16c", "fma", "avx512f", "avx512bw", "avx512vnni", "avx512bf16", "amx-tile",
                         "amx-bf16", "amx-int8") if f in host.features()]
    return (f"{cpu} (LLVM: {host.name()}; {' '.join(flags) or 'no AVX2'}), {cores} cores usable; "
            f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _worker_cli(sys.argv[2:])
    else:
        print(__doc__)
