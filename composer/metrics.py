"""Evaluation metrics: accuracy, macro-F1, Matthews correlation, Pearson and Spearman."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from composer.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from composer.data import Example, TaskSpec

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else 0.0


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_labels: int | None = None) -> float:
    labels = range(num_labels) if num_labels else np.unique(np.concatenate([pred, gold]))
    f1s = []
    for c in labels:
        tp = float(((pred == c) & (gold == c)).sum())
        fp = float(((pred == c) & (gold != c)).sum())
        fn = float(((pred != c) & (gold == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def mcc(pred: np.ndarray, gold: np.ndarray, num_labels: int | None = None) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K); 0 when undefined."""
    k = num_labels or int(max(pred.max(initial=0), gold.max(initial=0)) + 1)
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (gold, pred), 1)
    t, p, c, s = cm.sum(1), cm.sum(0), np.trace(cm), cm.sum()
    denom = np.sqrt((s**2 - (p**2).sum()) * (s**2 - (t**2).sum()))
    return float((c * s - (t * p).sum()) / denom) if denom > 0 else 0.0


def mcnemar_p(before: np.ndarray, after: np.ndarray) -> tuple[float, int, int]:
    """Exact one-sided McNemar test on paired per-example correctness: the probability, were both models
    equally good, of `after` winning at least as many of the rows where they disagree as it did.
    Returns (p, rows gained, rows lost)."""
    before, after = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    gained, lost = int((after & ~before).sum()), int((before & ~after).sum())
    n = gained + lost
    p = sum(math.comb(n, k) for k in range(gained, n + 1)) / 2**n if n else 1.0
    return float(p), gained, lost


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    if len(gold) < 2 or np.std(pred) == 0 or np.std(gold) == 0:
        return 0.0
    return float(np.corrcoef(pred, gold)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # average ranks of ties
        idx = x == v
        ranks[idx] = ranks[idx].mean()
    return ranks


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    return pearson(_ranks(pred), _ranks(gold))


def classification_metrics(logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    pred = logits.argmax(-1)
    n = logits.shape[-1]
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, n), "mcc": mcc(pred, gold, n)}


def regression_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    return {"pearson": pearson(pred, gold), "spearman": spearman(pred, gold), "mse": float(((pred - gold) ** 2).mean())}


def check_metric(kind: str, metric: str) -> None:
    allowed = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    if metric not in allowed:
        raise ConfigError(f"metric {metric!r} does not apply to {kind}; use one of {allowed}")


def score(task: TaskSpec, logits: torch.Tensor, examples: Sequence[Example]) -> dict[str, float]:
    if task.kind == "regression":
        gold = np.array([float(e.label) for e in examples])  # type: ignore[arg-type]
        return regression_metrics(logits.float().cpu().numpy(), gold)
    gold = np.array([task.label_index(e.label) for e in examples])
    return classification_metrics(logits.float().cpu().numpy(), gold)
