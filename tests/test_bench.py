"""minigpt2.bench: random checkpoints with the project's writer, one in-process worker, the table.

Speed itself is never asserted (benchmarks print tables; they do not pass or fail).
"""

import sys

import numba
import numpy as np

from minigpt2 import bench, engine
from minigpt2.config import GPT2Config
from minigpt2.model import GPT2LMHeadModel
from minigpt2.weights.safetensors import load_file


def test_random_checkpoint_has_the_shapes_and_init(tmp_path):
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=97, n_positions=64)
    folder = bench.write_random_checkpoint(tmp_path / "m", "tiny", config=config)
    tensors = load_file(folder / "model.safetensors")
    assert tensors["h.1.mlp.c_fc.weight"].shape == (32, 128)
    assert tensors["wte.weight"].shape == (97, 32)
    np.testing.assert_array_equal(tensors["h.0.ln_1.weight"], 1.0)
    np.testing.assert_array_equal(tensors["ln_f.bias"], 0.0)
    assert abs(float(tensors["h.0.attn.c_attn.weight"].std()) - 0.02) < 0.003
    model = GPT2LMHeadModel.from_pretrained(folder, backend="numpy")
    assert model.config.n_layer == 2
    # written once: a second call keeps the file
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    bench.write_random_checkpoint(folder, "tiny", config=config)
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


def test_worker_measures_and_table_prints(tmp_path):
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=97, n_positions=64)
    folder = bench.write_random_checkpoint(tmp_path / "m", "tiny", config=config)
    try:
        result = bench.run_worker("numba", str(folder), lengths=[8], new_tokens=3, repeats=1, threads=1,
                                  dtype="int8", batch=2)
    finally:
        engine.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert result["prefill_tok_s"]["8"] > 0 and result["decode_tok_s"] > 0
    assert result["decode_long_median_tok_s"] > 0
    assert len(result["decode_tokens"]) == 3 and result["peak_rss_mb"] > 0
    results = {"numba int8": dict(result, start_s=1.0), "numba float32": dict(result, start_s=2.0)}
    table = bench.format_table(results, [8], 3, compare=("numba int8", "numba float32"), batch=2)
    lines = table.splitlines()
    assert lines[0] == "| | numba int8 | numba float32 | numba int8 / numba float32 |"
    assert lines[2].startswith("| prefill 8 tok/s |") and lines[2].endswith("| 1.00x |")
    assert any(line.startswith("| decode tok/s (batch 2, 16-token prompt, 3 new) |") for line in lines)


def test_worker_applies_the_matmul_precision(tmp_path):
    config = GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=97, n_positions=96)
    folder = bench.write_random_checkpoint(tmp_path / "m", "tiny", config=config)
    try:
        result = bench.run_worker("numba", str(folder), lengths=[40], new_tokens=0, repeats=1, threads=1,
                                  dtype="bfloat16", matmul_precision="medium")
        assert engine.get_float32_matmul_precision() == "medium"
    finally:
        engine.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        engine.set_float32_matmul_precision("highest")
    assert result["prefill_tok_s"]["40"] > 0


def test_llama_bench_columns_read_its_json(tmp_path):
    """A llama.cpp column runs llama-bench once per test (-p N -n 0 for a prefill, -p 0 -n N -d 16 for
    decode after a 16-token context) and reads its JSON; a stand-in binary answers as llama-bench does."""
    fake = tmp_path / "llama-bench"
    fake.write_text(
        "#!" + sys.executable + "\n"
        "import json, sys\n"
        "a = sys.argv\n"
        "value = lambda flag: int(a[a.index(flag) + 1]) if flag in a else 0\n"
        "open(sys.argv[0] + '.log', 'a').write(' '.join(a[1:]) + '\\n')\n"
        "p, n = value('-p'), value('-n')\n"
        "print(json.dumps([{'n_prompt': p, 'n_gen': n, 'n_depth': value('-d'), 'avg_ts': 1000.0 + p if p else 50.0 + n}]))\n")
    fake.chmod(0o755)
    spec = {"backend": "llama.cpp", "llama_bench": str(fake), "gguf": "model-q8_0.gguf"}
    result = bench.run_llama_bench(spec, [512, 1024], 32, repeats=3, threads=2)
    assert result["prefill_tok_s"] == {"512": 1512.0, "1024": 2024.0}
    assert result["decode_tok_s"] == result["decode_median_tok_s"] == 82.0
    calls = (tmp_path / "llama-bench.log").read_text().splitlines()
    assert calls[-1] == f"-m model-q8_0.gguf -t 2 -r 3 -o json -p 0 -n 32 -d {bench.PROMPT_TOKENS}"
    # and as a column of run_columns, taking turns with the others, best of the rounds
    merged = bench.run_columns({"llama.cpp q8_0": spec}, [512], 32, repeats=3, rounds=2, threads=2, log=lambda m: None)
    assert merged["llama.cpp q8_0"]["decode_median_tok_s"] == 82.0
    assert merged["llama.cpp q8_0"]["prefill_tok_s"] == {"512": 1512.0}
    assert len((tmp_path / "llama-bench.log").read_text().splitlines()) == 3 + 2 * 2
