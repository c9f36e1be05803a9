"""Shared test fixtures: paths to the committed data and reference fixtures; the AMX mode.

The AMX kernels (engine/amx.py) run natively where the CPU has AMX and in emulation everywhere
else: on a CPU without amx-tile and amx-bf16 this file sets MINIGPT2_AMX=emulate before any test
module imports minigpt2 (the engine reads it once, at import, and Numba compiles per process), so
that tests/test_amx.py runs the whole AMX path on every machine instead of skipping it. An
explicit MINIGPT2_AMX in the environment is left alone (MINIGPT2_AMX= runs the suite without it).
"""

import os
from pathlib import Path

import llvmlite.binding
import pytest


def has_native_amx():
    """Whether LLVM sees the AMX features the kernels use (checked without importing minigpt2)."""
    try:
        features = llvmlite.binding.get_host_cpu_features()
    except RuntimeError:
        return False
    return bool(features.get("amx-tile", False) and features.get("amx-bf16", False))


if "MINIGPT2_AMX" not in os.environ and not has_native_amx():
    os.environ["MINIGPT2_AMX"] = "emulate"


def pytest_report_header(config):
    mode = {"emulate": "emulated (MINIGPT2_AMX=emulate)", "": "native where the CPU has it"}
    return f"AMX kernels: {mode.get(os.environ.get('MINIGPT2_AMX', ''), os.environ.get('MINIGPT2_AMX'))}"

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"                  # tinyshakespeare.txt, blns.txt
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
GPT2_VOCAB_DIR = REPO_ROOT / "minigpt2" / "data" / "gpt2"   # encoder.json, vocab.bpe


@pytest.fixture(scope="session")
def data_dir():
    return DATA_DIR


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES_DIR
