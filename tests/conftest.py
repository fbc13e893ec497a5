"""Shared fixtures: tiny models built from config (never downloaded)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from transformers import BertConfig, BertModel, BertTokenizerFast

FIXTURES = Path(__file__).parent / "fixtures"
# The device the composer and worker tests run their models on: "cpu" (CI) or "cuda" on a GPU machine. On the CPU
# the GPU is hidden before torch initialises CUDA, so the suite is the same on any machine; with "cuda" the code
# picks the GPU by itself (composer.base.pick_device), and tests compare numbers after bringing them to the CPU.
TEST_DEVICE = os.environ.get("COMPOSER_TEST_DEVICE", "cpu")
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
elif not TEST_DEVICE.startswith("cuda"):
    raise RuntimeError(f"COMPOSER_TEST_DEVICE must be cpu or cuda[:N], got {TEST_DEVICE!r}")
WORDS = [
    "good",
    "great",
    "fine",
    "bad",
    "awful",
    "poor",
    "movie",
    "film",
    "plot",
    "actor",
    "story",
    "food",
    "taste",
    "fresh",
    "rotten",
    "the",
    "a",
    "an",
    "is",
    "was",
    "it",
    "this",
    "that",
    "and",
    "or",
    "not",
    "very",
    "really",
    "quite",
    "boring",
    "funny",
    "sad",
    "happy",
    "love",
    "hate",
]


def write_tokenizer(directory: Path) -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(directory)


def make_tiny_bert(directory: Path, seed: int = 0, layers: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(directory)
    write_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def other_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, different weights: a different base identity."""
    return make_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=1)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def toy_rows() -> list[dict]:
    """A tiny sentiment task the tiny model can fit (for loop mechanics, never for quality claims)."""
    pos = ["good movie", "great film", "really funny story", "love this food", "fresh and happy", "very good actor"]
    neg = ["bad movie", "awful film", "really boring story", "hate this food", "rotten and sad", "very poor actor"]
    rows = [{"text": t, "label": "pos"} for t in pos] + [{"text": t, "label": "neg"} for t in neg]
    return rows


def postgres_url() -> str | None:
    url = os.environ.get("COMPOSER_TEST_POSTGRES_URL")
    if not url:
        msg = "POSTGRESQL NOT TESTED: set COMPOSER_TEST_POSTGRES_URL (scripts/test.sh starts a server)"
        if os.environ.get("COMPOSER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return url


@pytest.fixture()
def fresh_pg_database():
    """A new, empty PostgreSQL database per test; dropped afterwards."""
    admin_url = make_url(postgres_url())
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def no_dropped_connections():  # type: ignore[no-untyped-def]
    """Fails the session if a real server dropped a connection under any test's request (tests/http.py)."""
    from tests.http import DROPPED

    yield
    assert not DROPPED, f"the server dropped {len(DROPPED)} connection(s): {DROPPED[:5]}"


@pytest.fixture(scope="session", autouse=True)
def diff_kernel_loaded():  # type: ignore[no-untyped-def]
    """The diff's C++ kernel loaded before any test (built here if this machine has not yet), so which product
    serves a diff does not depend on when its background load finishes; tests of the MKL path switch it off."""
    from composer.diff.kernel import KERNEL

    KERNEL.load()
    yield
