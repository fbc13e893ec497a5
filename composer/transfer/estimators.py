"""Transferability estimators: how much a source adapter should help a target task, before training on it.

- `semb`: Poth et al. (2021)'s SEmb, the cosine between the mean sentence embedding of the target's
  training texts and that of the source's, both through the bare base (mean-pooled).
- `logme`: You et al. (2021)'s LogME, the log marginal evidence of a Bayesian linear model from the
  features a source adapter gives the target's rows to their labels (per class, averaged), a port of the
  authors' reference algorithm in float64.
- `fusion_probe`: one short AdapterFusion over every candidate on the target's rows; a candidate's score
  is its mean attention (AdapterFusion's own reading of which members it uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch

from composer.adapter_artifact import AdapterArtifact
from composer.base import LoadedBase
from composer.data import Collator, Example, TaskSpec
from composer.fusion.modules import FusionConfig
from composer.fusion.training import attention_report, train_fusion
from composer.training import TrainConfig

Estimator = Literal["semb", "logme", "fusion_probe"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)


def semb(target: torch.Tensor, sources: Sequence[torch.Tensor]) -> list[float]:
    """Cosine between the target's mean embedding and each source's ([N, H] each)."""
    t = target.double().mean(0)
    return [float(torch.nn.functional.cosine_similarity(t, s.double().mean(0), dim=0)) for s in sources]


def _evidence(y: np.ndarray, f: np.ndarray, s: np.ndarray, v: np.ndarray, vh: np.ndarray) -> float:
    """The maximised evidence of one target column `y` [N] given features `f` [N, D] (f.T @ f = v diag(s) vh)."""
    n, d = f.shape
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    tmp = vh @ (f.T @ y)
    alpha_de = beta_de = 0.0
    for _ in range(11):
        gamma = float((beta * s / (alpha + beta * s)).sum())
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = float((m * m).sum())
        alpha = gamma / max(alpha_de, 1e-300)
        beta_de = float(((y - f @ m) ** 2).sum())
        beta = (n - gamma) / max(beta_de, 1e-300)
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    evidence = (
        d / 2.0 * math.log(alpha)
        + n / 2.0 * math.log(beta)
        - 0.5 * float(np.log(alpha + beta * s).sum())
        - beta / 2.0 * beta_de
        - alpha / 2.0 * alpha_de
        - n / 2.0 * math.log(2 * math.pi)
    )
    return evidence / n


def logme(features: torch.Tensor, labels: torch.Tensor) -> float:
    """LogME of features [N, D] for integer class labels [N] (the mean over one-vs-rest columns).
    Higher is better; comparable across sources scored on the same rows. NumPy float64, as the
    reference: torch's LAPACK calls, made right after a forward, can wait seconds on its spinning
    OpenMP threads."""
    f = features.double().numpy()
    y = labels.numpy()
    # f.T @ f is symmetric PSD, so its SVD (the reference's) is its eigendecomposition: eigh is several
    # times faster than a general SVD and gives the same v diag(s) v.T
    s, v = np.linalg.eigh(f.T @ f)
    s, vh = np.clip(s, 0, None), v.T
    classes = np.unique(y)
    return sum(_evidence((y == c).astype(np.float64), f, s, v, vh) for c in classes) / len(classes)


def fusion_probe(
    base: LoadedBase,
    task: TaskSpec,
    rows: Sequence[Example],
    candidates: Sequence[AdapterArtifact],
    steps: int = 30,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    max_length: int = 64,
    seed: int = 0,
) -> list[float]:
    """Mean fusion attention per candidate after `steps` steps of a fresh fusion (uniform start, a new
    head) on `rows`; the attention is read on the same rows. The learning rate is far above
    AdapterFusion's 5e-5, which in 30 steps would leave the attention where it started."""
    cfg = TrainConfig(
        learning_rate=learning_rate,
        epochs=max(1, math.ceil(steps * batch_size / max(len(rows), 1))),
        max_steps=steps,
        batch_size=batch_size,
        max_length=max_length,
        patience=0,
        seed=seed,
    )
    run = train_fusion(base, task, rows, [], list(candidates), FusionConfig(), cfg, significance=None)
    report = attention_report(run.model, run.name, rows, Collator(base.tokenizer, task, max_length), batch_size * 4)
    return [float(x) for x in report["mean_attention"]]  # type: ignore[union-attr]
