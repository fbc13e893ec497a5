"""The training runs of bench/transfer.py, each kept in a JSON file as it finishes so a rerun resumes:
one ST-A on a target's low-resource subset, cold or warm-started from a source adapter, scored per test
row; and a fusion over a target's own adapter and sources."""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from composer.adapter_artifact import split_tensors
from composer.adapter_training import predict_logits, train_st_adapter
from composer.base import LoadedBase
from composer.composition import Fuse, Single
from composer.corpora import Corpus
from composer.data import Collator
from composer.fusion.modules import FusionConfig
from composer.fusion.training import train_fusion
from composer.presets import preset
from composer.training import TrainConfig


@dataclass(frozen=True)
class Budget:
    epochs: int
    batch_size: int
    max_length: int
    validation: int  # validation rows (early stopping picks the best epoch)
    test: int  # test rows scored


def macro_f1(pred: list[int], gold: list[int], classes: int) -> float:
    f1s = []
    for c in range(classes):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        fp = sum(p == c and g != c for p, g in zip(pred, gold, strict=True))
        fn = sum(p != c and g == c for p, g in zip(pred, gold, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return statistics.mean(f1s)


class Runs:
    """Results by key, saved after each run."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, compute, *args) -> dict:  # type: ignore[no-untyped-def]
        """The result stored under `key`, else `compute(*args)`, stored."""
        if key not in self.data:
            self.data[key] = compute(*args)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)
        return self.data[key]


def subset(corpus: Corpus, n: int, b: Budget) -> tuple[list, list, list]:
    train = list(corpus.train)
    random.Random(f"bench-transfer/{corpus.task.name}/{n}").shuffle(train)
    return train[:n], corpus.validation[: b.validation], corpus.test[: b.test]


def scored(model, name, corpus: Corpus, test, b: Budget, comp) -> dict:  # type: ignore[no-untyped-def]
    logits = predict_logits(
        model, name, test, Collator(model.base.tokenizer, corpus.task, b.max_length), composition=comp
    )
    pred = logits.argmax(-1).tolist()
    gold = [corpus.task.labels.index(e.label) for e in test]
    return {
        "correct": [int(p == g) for p, g in zip(pred, gold, strict=True)],
        "accuracy": statistics.mean(int(p == g) for p, g in zip(pred, gold, strict=True)),
        "macro_f1": macro_f1(pred, gold, len(corpus.task.labels)),
    }


def train_one(base: LoadedBase, corpus: Corpus, n: int, seed: int, b: Budget, source=None, keep: bool = False) -> dict:  # type: ignore[no-untyped-def]
    """An ST-A on n rows of the target: cold (seq_bn), or from `source` (an AdapterArtifact) with a fresh head."""
    train, val, test = subset(corpus, n, b)
    cfg = TrainConfig(
        learning_rate=1e-3,
        epochs=b.epochs,
        batch_size=b.batch_size,
        max_length=b.max_length,
        patience=0,
        seed=seed,
        checkpoint_every_steps=0,
    )
    if source is None:
        adapter_cfg, init = preset("seq_bn"), None
    else:
        adapter_cfg = source.config
        init, _ = split_tensors(source)
    run = train_st_adapter(base, corpus.task, train, val, adapter_cfg, cfg, name="t", init_adapter=init)
    out = scored(run.model, "t", corpus, test, b, Single("t"))
    if keep:
        out["artifact"] = run.artifact(corpus.task)
    return out


def fusion_one(base: LoadedBase, corpus: Corpus, n: int, own, sources, b: Budget) -> dict:  # type: ignore[no-untyped-def]
    """A fusion warm-started on the target's own cold adapter (as the service's fusion job does), over it
    and `sources`."""
    train, val, test = subset(corpus, n, b)
    cfg = TrainConfig(
        learning_rate=5e-5 * 20,  # a low-resource target: few steps; the service's grid also tries higher
        epochs=b.epochs,
        batch_size=b.batch_size,
        max_length=b.max_length,
        patience=0,
        seed=0,
    )
    torch.manual_seed(0)
    run = train_fusion(base, corpus.task, train, val, [own, *sources], FusionConfig(), cfg, start=0)
    return scored(run.model, run.name, corpus, test, b, Fuse(run.name))
