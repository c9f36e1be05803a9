"""Every lesson runs (fast settings) and passes its checks; a wrong piece makes its check fail.

Lessons run in-process through their `main(argv)` (one import of numpy/numba for all of them);
two subprocess tests check the exit codes that `python -m lessons.<name>` gives a user.
The lessons' references are committed files (lessons/references, tests/fixtures), so no torch.
"""

import importlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from lessons.__main__ import lesson_names  # noqa: E402
from lessons._common import Failed  # noqa: E402

LESSONS = lesson_names()
# lessons that check the published GPT-2 weights: without them in the cache they say SKIPPED
NEEDS_REAL_WEIGHTS = {"l16_official"}


def run_lesson(name, tmp_path, *extra):
    module = importlib.import_module(f"lessons.{name}")
    return module.main(["--fast", "--figures", str(tmp_path), *extra])


def test_there_are_at_least_twelve_numbered_lessons():
    assert len(LESSONS) >= 12
    assert LESSONS[0] == "l00_files"


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_and_passes(name, tmp_path, capsys):
    assert run_lesson(name, tmp_path) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "FAIL" not in out
    if any(line.startswith("PASS") for line in lines):            # check() printed a passing check
        return
    # no check ran: allowed only in a lesson about the real weights, saying they are missing
    assert name in NEEDS_REAL_WEIGHTS, f"{name} printed no PASS line"
    assert any(line.startswith("SKIPPED") and "weights" in line for line in lines), \
        f"{name} printed no PASS line and no SKIPPED line saying which weights are missing"


def test_at_least_five_lessons_draw_a_figure(tmp_path, capsys):
    drawing = [n for n in LESSONS if "figure_path(" in (REPO_ROOT / "lessons" / f"{n}.py").read_text()]
    assert len(drawing) >= 5
    for name in drawing[:2]:                              # and the files really are PNGs
        run_lesson(name, tmp_path)
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) >= 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_no_figures_option_writes_nothing(tmp_path):
    assert run_lesson("l01_bytes_to_unicode", tmp_path, "--no-figures") == 0
    assert not list(tmp_path.iterdir())


def test_lessons_are_short():
    for name in LESSONS:
        lines = (REPO_ROOT / "lessons" / f"{name}.py").read_text(encoding="utf-8").count("\n")
        assert lines <= 210, f"{name} has {lines} lines"


# ---- a wrong piece is caught by the lesson that teaches it ----------------------------------------

def test_erf_gelu_instead_of_gelu_new_fails_the_gelu_lesson(tmp_path, capsys, monkeypatch):
    l06 = importlib.import_module("lessons.l06_layernorm_gelu")
    monkeypatch.setattr(l06, "GELU", l06.gelu_erf)
    with pytest.raises(Failed) as failure:
        run_lesson("l06_layernorm_gelu", tmp_path, "--no-figures")
    assert failure.value.code == 1
    assert "FAIL  GELU == torch gelu(approximate='tanh')" in capsys.readouterr().out


def test_a_mask_that_lets_tokens_see_the_future_fails_the_attention_lesson(tmp_path, capsys, monkeypatch):
    l07 = importlib.import_module("lessons.l07_attention")
    monkeypatch.setattr(l07, "MASK", lambda t: np.ones((t, t), dtype=bool))
    with pytest.raises(Failed):
        run_lesson("l07_attention", tmp_path, "--no-figures")
    assert "FAIL  probs == transformers' attentions[0]" in capsys.readouterr().out


def test_a_mask_that_is_not_causal_fails_the_toy_attention(tmp_path, capsys, monkeypatch):
    l07 = importlib.import_module("lessons.l07_attention")
    monkeypatch.setattr(l07, "causal_mask", lambda t: np.ones((t, t), dtype=bool))   # the toy sees the future
    with pytest.raises(Failed):
        run_lesson("l07_attention", tmp_path, "--no-figures")
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert failed and failed[0].startswith("FAIL  toy step 1: the causal average == the running mean")


def test_attention_without_the_sqrt_head_dim_scale_fails_the_attention_lesson(tmp_path, capsys, monkeypatch):
    l07 = importlib.import_module("lessons.l07_attention")
    monkeypatch.setattr(l07, "attention_scale", lambda config, layer: 1.0)
    with pytest.raises(Failed):
        run_lesson("l07_attention", tmp_path, "--no-figures")
    assert "FAIL  probs == transformers' attentions[0]" in capsys.readouterr().out


def test_an_off_by_one_mask_fails_the_kv_cache_lesson(tmp_path, capsys, monkeypatch):
    l07 = importlib.import_module("lessons.l07_attention")
    monkeypatch.setattr(l07, "MASK", lambda t: np.tril(np.ones((t, t), dtype=bool), k=-1))   # cannot see itself
    with pytest.raises(Failed):
        run_lesson("l09_kv_cache", tmp_path)
    assert "FAIL  cached logits == transformers' own cached decode" in capsys.readouterr().out


def test_a_missing_merge_fails_the_bpe_lesson(tmp_path, capsys, monkeypatch):
    l03 = importlib.import_module("lessons.l03_bpe_merge")
    ranks = dict(l03.RANKS)
    del ranks[("Ġ", "w")]                                  # merge rank 10: " world" cannot form
    monkeypatch.setattr(l03, "RANKS", ranks)
    with pytest.raises(Failed):
        run_lesson("l03_bpe_merge", tmp_path, "--no-figures")
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert failed and "-> published ids" in failed[0]


def test_arange_positions_for_left_padding_fail_the_batching_lesson(tmp_path, capsys, monkeypatch):
    l12 = importlib.import_module("lessons.l12_batching")
    monkeypatch.setattr(l12, "positions_from_mask", lambda mask: np.broadcast_to(np.arange(mask.shape[1]), mask.shape))
    with pytest.raises(Failed):
        run_lesson("l12_batching", tmp_path)
    assert "FAIL  left padding + cumsum positions" in capsys.readouterr().out


def test_openais_top_p_boundary_rule_differs_from_transformers(tmp_path, capsys, monkeypatch):
    """OpenAI's sampler keeps tokens while the cumulative probability is <= p: it drops the token
    that crosses p, which transformers keeps. The sampling lesson's check must see that."""
    l11 = importlib.import_module("lessons.l11_sampling")

    def top_p_openai(scores, p):
        order = np.argsort(-scores, axis=-1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(l11.softmax(scores), order, axis=-1), axis=-1)
        keep_sorted = cumulative <= p
        keep_sorted[:, 0] = True
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        return np.where(keep, scores, -np.inf)

    monkeypatch.setattr(l11, "top_p", top_p_openai)
    with pytest.raises(Failed):
        run_lesson("l11_sampling", tmp_path, "--no-figures")
    assert "FAIL  top_p 0.5: same tokens kept" in capsys.readouterr().out


def test_official_lesson_fails_on_wrong_weights_instead_of_passing(tmp_path, capsys, monkeypatch):
    """With weights that are not GPT-2's, the published text is not reproduced: FAIL, not PASS."""
    from lessons._common import random_weights
    from minigpt2.config import GPT2Config
    from minigpt2.weights.safetensors import save_file

    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=128)
    folder = tmp_path / "not-gpt2"
    config.save_pretrained(folder)
    save_file(random_weights(config), folder / "model.safetensors")
    l16 = importlib.import_module("lessons.l16_official")
    monkeypatch.setattr(l16, "local_folder", lambda name: folder if name == "gpt2" else None)
    with pytest.raises(Failed):
        run_lesson("l16_official", tmp_path)
    out = capsys.readouterr().out
    assert "SKIPPED  the real gpt2 weights" not in out
    assert "FAIL  gpt2: the first 10 greedy tokens start the published continuation" in out


# ---- what a user sees on the command line ------------------------------------------------------------

def _python(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_python_m_lessons_lists_every_lesson():
    result = _python("-m", "lessons")
    assert result.returncode == 0
    for name in LESSONS:
        assert name in result.stdout


def test_exit_codes_from_the_command_line(tmp_path):
    ok = _python("-m", "lessons.l02_pretokenize", "--fast")
    assert ok.returncode == 0 and "PASS" in ok.stdout
    broken = _python("-c", "import lessons.l06_layernorm_gelu as m; from lessons._common import run; "
                           f"m.GELU = m.gelu_erf; run(lambda: m.main(['--fast', '--figures', {str(tmp_path)!r}]))")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAIL" in broken.stdout
