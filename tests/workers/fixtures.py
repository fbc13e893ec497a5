"""A registry with a tiny base model, a task and datasets, for worker tests."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from registry_db.blobs import LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry
from registry_db.repo import catalog, keys
from service.catalog import register_base_model, upload_dataset

POS = ["good", "great", "fine", "fresh", "happy", "love", "funny"]
NEG = ["bad", "awful", "poor", "rotten", "sad", "hate", "boring"]
FILL = ["the", "movie", "film", "plot", "actor", "story", "food", "was", "is", "very", "really"]


def toy_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = [rng.choice(POS if label == "pos" else NEG)] + rng.sample(FILL, 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@dataclass
class World:
    registry: Registry
    db_url: str
    blob_url: str
    owner: str
    base: str
    task: str
    train: str
    validation: str


def make_world(tmp: Path, base_dir: Path, n_train: int = 48, db_url: str | None = None) -> World:
    """A registry (SQLite, or the PostgreSQL database `db_url` names) with an owner, a task and its data."""
    db_url = db_url or f"sqlite:///{tmp / 'registry.db'}"
    upgrade(db_url)
    reg = Registry(make_engine(db_url), LocalBlobStore(tmp / "blobs"))
    with reg.tx() as s:
        owner = keys.create_owner(s, "acme").id
        catalog.create_task(s, owner, "sentiment", "classification", ["neg", "pos"])
    base, _ = register_base_model(reg, base_dir)
    train, _ = upload_dataset(reg, owner, "sentiment", "train", jsonl(toy_rows(n_train)), "train.jsonl")
    val, _ = upload_dataset(reg, owner, "sentiment", "validation", jsonl(toy_rows(16, seed=1)), "val.jsonl")
    return World(reg, db_url, f"file://{tmp / 'blobs'}", owner, base.id, "sentiment", train.id, val.id)


def adapter_spec(w: World, **hyper) -> dict:
    hp = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 4, "patience": 0, **hyper}
    return {
        "task": w.task,
        "base_model": w.base,
        "train_dataset": w.train,
        "validation_dataset": w.validation,
        "adapter": {"reduction_factor": 4},
        "hyperparameters": hp,
    }
