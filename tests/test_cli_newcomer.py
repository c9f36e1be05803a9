"""Issue 20, what a newcomer met in the first hour: each test was written to fail first."""

import ast
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigpt2
from minigpt2 import cli
from minigpt2.cli import common
from minigpt2.cli.generate_cmd import timing_line
from minigpt2.generate import generate
from minigpt2.model import GPT2LMHeadModel
from minigpt2.scoring import score
from minigpt2.tokenizer import GPT2Tokenizer
from minigpt2.weights import hub

from generation_helpers import write_random_model

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return str(write_random_model(tmp_path_factory.mktemp("tiny-model"), seed=3))   # n_positions 64


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_score_stride_longer_than_the_context_takes_the_context(capsys, tmp_path, model_folder):
    """The README's `--stride 512` on a model with a shorter context (the bundled one has 256)."""
    path = tmp_path / "long.txt"
    path.write_text("To be, or not to be, that is the question. " * 20, encoding="utf-8")
    model = GPT2LMHeadModel.from_pretrained(model_folder, backend="numpy")
    ids = GPT2Tokenizer.from_pretrained(model_folder).encode(path.read_text(encoding="utf-8"))
    expected = score(model, ids, stride=64)
    code, out, err = run_cli(capsys, "score", "--file", path, "--model", model_folder, "--backend", "numpy",
                             "--stride", 512)
    assert code == 0, err
    assert err.strip().splitlines() == ["minigpt2: --stride 512 is longer than the model's context; using 64"]
    np.testing.assert_allclose(float(re.search(r"perplexity: ([\d.]+)", out).group(1)), expected.perplexity,
                               rtol=1e-4)


def test_offline_fallback_is_one_short_line(capsys, monkeypatch, tmp_path, model_folder):
    monkeypatch.setenv("MINIGPT2_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(name, **kwargs):   # the hub's real message, about 330 characters with the advice
        raise hub.HubError(f"cannot download https://huggingface.co/openai-community/{name}/resolve/main/"
                           "config.json after 5 tries (Connection refused). No network? Set HF_HUB_OFFLINE=1 "
                           "to use only local files, copy a model folder here and pass its path, or set "
                           "HF_ENDPOINT to a reachable mirror")

    monkeypatch.setattr(hub, "download_model", no_network)
    monkeypatch.setattr(common, "FALLBACK_MODEL", model_folder)
    code, _, err = run_cli(capsys, "generate", "Hi", "--backend", "numpy", "--max-new-tokens", 2, "--greedy")
    notes = [line for line in err.splitlines() if "demo model" in line]
    assert code == 0 and len(notes) == 1
    assert "Connection refused" in notes[0] and len(notes[0].replace(model_folder, "X")) <= 100, notes[0]


def test_short_reason_of_the_offline_error():
    offline = hub.HubError("model 'gpt2' is not in /c/gpt2 nor in the Hugging Face cache, and downloading "
                           "is off (HF_HUB_OFFLINE=1): run `python download_weights.py gpt2` ...")
    assert common.short_reason(offline) == "HF_HUB_OFFLINE=1"
    assert common.short_reason(ValueError("x" * 100)) == "x" * 37 + "..."


def test_compile_notice_is_printed_when_the_kernel_cache_is_cold(capsys, monkeypatch, model_folder):
    argv = ("generate", "Hi", "--model", model_folder, "--max-new-tokens", 2, "--greedy")
    monkeypatch.setattr(common, "kernel_cache_is_cold", lambda: True)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and err.splitlines()[0] == "minigpt2: compiling kernels (once)..."
    monkeypatch.setattr(common, "kernel_cache_is_cold", lambda: False)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0 and "compiling" not in err


def test_kernel_cache_is_cold_reads_numba_index_times(tmp_path):
    engine = tmp_path / "engine"
    (engine / "__pycache__").mkdir(parents=True)
    source = engine / "linear_op.py"
    source.write_text("@njit(cache=True)\ndef f(): pass\n")
    assert common.kernel_cache_is_cold(engine)                      # no index at all
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    index = engine / "__pycache__" / f"linear_op.f-1.{tag}.nbi"
    index.write_bytes(b"")
    os.utime(source, (1000, 1000))
    os.utime(index, (2000, 2000))
    assert not common.kernel_cache_is_cold(engine)                  # index newer than its source
    os.utime(source, (3000, 3000))
    assert common.kernel_cache_is_cold(engine)                      # source edited since: recompiles
    (engine / "__pycache__" / f"linear_op.f-1.py27.nbi").write_bytes(b"")   # another Python's: ignored
    assert common.kernel_cache_is_cold(engine)


def test_slow_first_call_is_not_counted_as_the_prompt(capsys, monkeypatch, model_folder):
    """A first call that takes 1 s (Numba compiling or loading kernels) must not show in the
    prompt's tokens/s: the command warms the kernels up first and reports that as load time."""
    calls = []
    original_call = GPT2LMHeadModel.__call__

    def slow_first(self, *args, **kwargs):
        if not calls:
            time.sleep(1.0)
        calls.append(1)
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(GPT2LMHeadModel, "__call__", slow_first)
    code, _, err = run_cli(capsys, "generate", "Alan Turing theorized that", "--model", model_folder,
                           "--max-new-tokens", 3, "--greedy", "--timing")
    assert code == 0
    prompt_ms = float(re.search(r"prompt pass ([\d.]+) ms", err).group(1))
    kernels_s = float(re.search(r"kernels ([\d.]+) s", err).group(1))
    assert prompt_ms < 500 and kernels_s >= 1.0, err


def test_stop_at_the_first_token_counts_nothing_generated(capsys, model_folder):
    model = GPT2LMHeadModel.from_pretrained(model_folder, backend="numpy")
    tok = GPT2Tokenizer.from_pretrained(model_folder)
    ids = tok.encode("Alan Turing theorized that")
    free = tok.decode(generate(model, [ids], max_new_tokens=4, eos_token_id=None)[0, len(ids):])
    code, out, err = run_cli(capsys, "generate", "Alan Turing theorized that", "--model", model_folder,
                             "--backend", "numpy", "--greedy", "--max-new-tokens", 4, "--stop", free[0])
    assert code == 0 and out == "Alan Turing theorized that\n"
    assert "generated: 0 tokens (ended by a stop string)" in err, err


def test_timing_line_counts_in_words():
    assert timing_line(1, [0.5], 0.0, False) == "prompt: 1 token, 2.0 tokens/s | generated: 1 token"
    assert timing_line(2, [0.5, 0.25], 0.0, False) == \
        "prompt: 2 tokens, 4.0 tokens/s | generated: 2 tokens, 4.0 tokens/s"
    assert timing_line(2, [0.5, 0.25], 0.0, False, ended_by="<|endoftext|>") == \
        "prompt: 2 tokens, 4.0 tokens/s | generated: 1 token, 4.0 tokens/s (ended by <|endoftext|>)"


def test_tokenize_explain_into_a_closed_pipe_ends_quietly():
    text = "hello world, " * 300                                   # about 200 KB of explanation
    process = subprocess.Popen([sys.executable, "-m", "minigpt2", "tokenize", "--explain", text],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    first = process.stdout.readline()                              # what `| head -1` reads
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 0 and first and err == b"", err


def test_tokenize_stdin_reports_invalid_utf8_at_its_byte(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ab\xffcd")))
    code, out, err = run_cli(capsys, "tokenize", "-")
    assert code == 1 and out == ""
    assert err == "minigpt2: error: standard input is not UTF-8 text (invalid start byte at byte 2)\n"
    path = tmp_path / "bad.txt"                                    # score --file says it the same way
    path.write_bytes(b"ab\xffcd")
    code, _, err = run_cli(capsys, "score", "--file", path)
    assert code == 1 and err == f"minigpt2: error: {path} is not UTF-8 text (invalid start byte at byte 2)\n"


def test_tokenize_stdin_still_reads_utf8(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("Hello world".encode())))
    code, out, _ = run_cli(capsys, "tokenize", "-", "--ids")
    assert code == 0 and out == "15496 995\n"        # tiktoken gpt2: "Hello world"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"minigpt2 {minigpt2.__version__}\n"
    run = subprocess.run([sys.executable, "-m", "minigpt2", "--version"], capture_output=True, text=True,
                         env=ENV, cwd=ROOT, timeout=60)
    assert run.returncode == 0 and run.stdout == f"minigpt2 {minigpt2.__version__}\n"


# ---- README snippets -----------------------------------------------------------------------------

def python_block_after(heading_text):
    start = README.index(heading_text)
    block = re.search(r"```python\n(.*?)```", README[start:], re.S)
    return block.group(1), start + block.end()


def undefined_names(code):
    tree = ast.parse(code)
    bound = set(dir(__builtins__)) if isinstance(__builtins__, dict) is False else set(__builtins__)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def test_readme_amx_example_imports_what_it_uses():
    code, _ = python_block_after("### Faster prefill with bfloat16 products (AMX)")
    assert undefined_names(code) == set()


def test_readme_amx_available_path_works_after_import_minigpt2():
    assert "minigpt2.amx.available()" not in README and "minigpt2.engine.amx.available()" in README
    run = subprocess.run([sys.executable, "-c", "import minigpt2; print(minigpt2.engine.amx.available())"],
                         capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() in ("True", "False"), run.stderr


def test_readme_sequence_classification_output_is_what_the_code_prints(capsys, monkeypatch):
    code, end = python_block_after("Sequence classification on a checkpoint")
    shown = re.match(r"\s*```\n(.*?)```", README[end:], re.S).group(1)
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == shown


def test_generate_ordinary_reads_special_tokens_in_the_prompt_as_text(capsys, model_folder):
    prompt = "Hi<|endoftext|>"
    tok = GPT2Tokenizer.from_pretrained(model_folder)
    for flags, ids in (([], tok.encode("Hi") + [50256]), (["--ordinary"], tok.encode(prompt, allowed_special=()))):
        code, out, err = run_cli(capsys, "generate", prompt, "--model", model_folder, "--backend", "numpy",
                                 "--max-new-tokens", 0, *flags)
        assert code == 0 and f"prompt: {len(ids)} tokens" in err, err
    assert len(tok.encode(prompt, allowed_special=())) == 8        # Hi < | end of text | >: not one token
