"""Shared test fixtures: paths to the committed data and reference fixtures."""

from pathlib import Path

import pytest

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
