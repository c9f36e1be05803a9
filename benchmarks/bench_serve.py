"""`minigpt2 serve` under load: 1, 4, 8 and 16 concurrent streaming clients against --max-batch 8
and --max-batch 1, side by side. Prints tokens/s (all clients together) and time to first token
(p50, p95 over every request).

    python benchmarks/bench_serve.py                         # random-weight GPT-2 124M (written once
                                                             # by minigpt2.bench, ~500 MB in the cache)
    python benchmarks/bench_serve.py --model minigpt2/models/tiny-shakespeare --max-tokens 64

Each server runs in its own process (the clients' threads must not share its GIL). Each client
sends --requests streamed greedy requests one after the other (prompt of ~16 tokens, --max-tokens
new ones); a warm-up round at every concurrency runs first so that no kernel compiles while timed.
With --arrival staggered (default) the clients start spread over one lone request's duration, as
independent users would; --arrival burst starts them at one instant, so the k-th first token waits
for k prefills (each prompt is prefilled alone, one after another).
Needs the serve extra and httpx.
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from minigpt2 import bench

BUNDLED = Path(__file__).resolve().parent.parent / "minigpt2" / "models" / "tiny-shakespeare"
PROMPTS = ["The history of the city begins in the year when the first settlers arrived from",
           "In a small village at the edge of the forest there lived an old woman who",
           "The committee met on Tuesday to discuss the budget for the coming year and",
           "Scientists have long wondered why some birds migrate thousands of miles while"]


def random_gpt2_folder():
    """A random-weight GPT-2 124M checkpoint with the real tokenizer files beside it."""
    folder = bench.write_random_checkpoint(bench.default_folder("gpt2"), "gpt2")
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).exists():
            shutil.copy(BUNDLED / name, folder / name)
    return folder


def start_server(folder, port, max_batch, threads):
    command = [sys.executable, "-m", "minigpt2", "serve", "--model", str(folder), "--port", str(port),
               "--max-batch", str(max_batch), "--max-queue", "256"]
    env = None
    if threads:
        env = {**os.environ, **{name: str(threads) for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                                  "OPENBLAS_NUM_THREADS")}}
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return process, url, httpx.get(url + "/v1/models").json()["data"][0]["id"]
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def one_request(client, url, model, prompt, max_tokens):
    """Stream one greedy completion: (seconds to the first token, total seconds, tokens)."""
    start = time.perf_counter()
    first, tokens = None, 0
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    with client.stream("POST", url + "/v1/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            if '"finish_reason": null' in line:      # one chunk per generated token
                tokens += 1
                if first is None:
                    first = time.perf_counter() - start
    return first, time.perf_counter() - start, tokens


def run_clients(url, model, n_clients, n_requests, max_tokens, spread=0.0):
    """n_clients threads, each sending n_requests one after the other: (tokens/s, [ttft]).
    Client i starts i / n_clients * spread seconds late (spread 0: all at once)."""
    ttfts, counts, errors = [], [], []

    def client_loop(i):
        time.sleep(i / n_clients * spread)
        with httpx.Client() as client:
            for r in range(n_requests):
                try:
                    first, _, tokens = one_request(client, url, model, PROMPTS[(i + r) % len(PROMPTS)], max_tokens)
                    ttfts.append(first)
                    counts.append(tokens)
                except Exception as error:           # counted and reported, the others go on
                    errors.append(error)
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]!r}")
    return sum(counts) / seconds, ttfts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: random-weight GPT-2 124M)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 1], help="--max-batch values to compare")
    parser.add_argument("--requests", type=int, default=2, help="requests per client (default: 2)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--arrival", choices=("staggered", "burst"), default="staggered",
                        help="staggered (default): client i starts i/n of a lone request's time late, as "
                             "independent users would; burst: all clients start at the same instant")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--threads", type=int, default=1,
                        help="the server's Numba and BLAS threads (default: 1; the clients need a core too, "
                             "and threads that spin on a shared CPU slow every step down; 0: as installed)")
    args = parser.parse_args(argv)
    folder = Path(args.model) if args.model else random_gpt2_folder()
    print(bench.machine_description())
    print(f"server threads: {args.threads or 'default'}; model {folder}; {args.requests} requests per client, "
          f"{args.max_tokens} new tokens each, greedy, streamed; arrival: {args.arrival}\n")
    results = {}
    for max_batch in args.batches:
        process, url, model = start_server(folder, args.port, max_batch, args.threads)
        try:
            run_clients(url, model, 1, 1, 4)                                    # warm-up: compile the kernels
            with httpx.Client() as client:                                      # a lone request's duration
                lone_seconds = one_request(client, url, model, PROMPTS[0], args.max_tokens)[1]
            spread = lone_seconds if args.arrival == "staggered" else 0.0
            for n_clients in args.clients:
                run_clients(url, model, min(n_clients, max_batch), 1, 4)       # warm-up: compile the kernels
                tps, ttfts = run_clients(url, model, n_clients, args.requests, args.max_tokens, spread)
                results[max_batch, n_clients] = (tps, np.percentile(ttfts, 50), np.percentile(ttfts, 95))
                print(f"  max-batch {max_batch:2d}, {n_clients:2d} clients: {tps:7.1f} tok/s, "
                      f"TTFT p50 {1000 * results[max_batch, n_clients][1]:7.0f} ms", flush=True)
        finally:
            process.terminate()
            process.wait()
    print()
    header = "| clients | " + " | ".join(f"tok/s (batch {b}) | TTFT p50 / p95 ms (batch {b})" for b in args.batches)
    print(header + " |")
    print("|" + "---|" * (1 + 2 * len(args.batches)))
    for n_clients in args.clients:
        cells = []
        for b in args.batches:
            tps, p50, p95 = results[b, n_clients]
            cells += [f"{tps:.1f}", f"{1000 * p50:.0f} / {1000 * p95:.0f}"]
        print(f"| {n_clients} | " + " | ".join(cells) + " |")
    if 8 in args.batches and 1 in args.batches and 8 in args.clients and 1 in args.clients:
        speedup = results[8, 8][0] / results[1, 8][0]
        ttft_ratio = results[8, 8][1] / results[8, 1][1]
        print(f"\n8 clients: batch 8 gives {speedup:.2f}x the tokens/s of batch 1 (target >= 3); "
              f"TTFT p50 {ttft_ratio:.2f}x a lone client's (target <= 2)")


if __name__ == "__main__":
    main()
