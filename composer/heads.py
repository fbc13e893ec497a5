"""Prediction heads: pooled encoder output -> logits (classification) or a value (regression).

The layer layout mirrors AdapterHub's `ClassificationHead` (dropout, dense, tanh,
dropout, out) so that its heads import weight for weight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from transformers.activations import get_activation

from composer.errors import ArtifactError, ConfigError
from composer.safetensors_io import read_tensors

if TYPE_CHECKING:
    from composer.data import TaskSpec


def activation(name: str) -> nn.Module:
    if name == "leakyrelu":
        return nn.LeakyReLU()
    return get_activation(name)


@dataclass(frozen=True)
class HeadConfig:
    kind: Literal["classification", "regression"] = "classification"
    num_labels: int = 2
    layers: int = 2
    activation: str = "tanh"
    pooling: Literal["cls", "mean", "first_token"] = "cls"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise ConfigError(f"head kind must be classification or regression, got {self.kind!r}")
        if self.kind == "regression" and self.num_labels != 1:
            object.__setattr__(self, "num_labels", 1)
        if self.kind == "classification" and self.num_labels < 2:
            raise ConfigError(f"a classification head needs >= 2 labels, got {self.num_labels}")
        if self.layers not in (1, 2):
            raise ConfigError(f"head layers must be 1 or 2, got {self.layers}")
        if self.pooling not in ("cls", "mean", "first_token"):
            raise ConfigError(f"pooling must be 'cls', 'mean' or 'first_token', got {self.pooling!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    if how in ("cls", "first_token"):
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class Linear(nn.Linear):
    """`nn.Linear` that skips its random initialisation on the meta device, where modules are built only to be
    given stored weights at once (`composer.encoder._built`): the initialisation, which loading
    overwrites, was about 40% of building an adapter for serving. Elsewhere it initialises (and draws from
    the RNG) exactly as `nn.Linear` does; its weights and state-dict keys are nn.Linear's."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class PredictionHead(nn.Module):
    def __init__(self, cfg: HeadConfig, hidden_size: int):
        super().__init__()
        self.cfg = cfg
        self.dense = Linear(hidden_size, hidden_size) if cfg.layers == 2 else None
        self.act = activation(cfg.activation) if cfg.layers == 2 else None
        self.out = Linear(hidden_size, cfg.num_labels)
        self.dropout = nn.Dropout(cfg.dropout)
        with torch.no_grad():
            for lin in (self.dense, self.out):
                if lin is not None and not lin.weight.is_meta:  # on meta: about to be given its weights
                    lin.weight.normal_(0.0, 0.02)
                    lin.bias.zero_()

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classify(pool(hidden, attention_mask, self.cfg.pooling))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        z = self.dropout(pooled)
        if self.dense is not None:
            z = self.dropout(self.act(self.dense(z)))
        out = self.out(z)
        return out.squeeze(-1) if self.cfg.kind == "regression" else out

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "regression":
            return nn.functional.mse_loss(logits, labels.to(logits.dtype))
        return nn.functional.cross_entropy(logits, labels)


def stacked_classify(heads: list[PredictionHead], pooled: torch.Tensor) -> torch.Tensor:
    """K heads at once on pooled [B, K, H] (row b, replica k uses head k) -> [B, K, C]. Eval only."""
    first = heads[0]
    if any(h.cfg != first.cfg for h in heads):
        raise ConfigError("an ensemble's heads must share one head config")
    z = pooled
    if first.dense is not None:
        w = torch.stack([h.dense.weight for h in heads])  # type: ignore[union-attr]
        b = torch.stack([h.dense.bias for h in heads])  # type: ignore[union-attr]
        z = first.act(torch.einsum("bkh,kgh->bkg", z, w) + b)  # type: ignore[misc]
    w = torch.stack([h.out.weight for h in heads])
    b = torch.stack([h.out.bias for h in heads])
    out = torch.einsum("bkh,kch->bkc", z, w) + b
    return out.squeeze(-1) if first.cfg.kind == "regression" else out


def head_for(task: TaskSpec, pooling: str = "mean") -> HeadConfig:
    return HeadConfig(kind=task.kind, num_labels=task.num_labels, pooling=pooling)  # type: ignore[arg-type]


def peft_seq_cls_head(
    tensors: dict[str, torch.Tensor], base_dir: str | None
) -> tuple[HeadConfig, dict[str, torch.Tensor]] | None:
    """The head of a PEFT SEQ_CLS artifact: its classifier from `modules_to_save`, and the pooler it reads
    (dense + tanh on position 0) from the base checkpoint, which PEFT does not copy. None: no classifier."""
    clf = {
        k.split("classifier.")[-1]: v for k, v in tensors.items() if ".classifier." in k or k.startswith("classifier.")
    }
    if not clf:
        return None
    if set(clf) != {"weight", "bias"}:
        raise ArtifactError(f"modules_to_save: the classifier has {sorted(clf)}, expected weight and bias")
    pooler = {k.split("pooler.dense.")[-1]: v for k, v in tensors.items() if "pooler.dense." in k}
    if not pooler:  # not in modules_to_save: the base's own pooler
        if base_dir is None:
            raise ConfigError("a PEFT SEQ_CLS artifact needs the base directory for its pooler weights")
        base = read_tensors(Path(base_dir) / "model.safetensors")
        pooler = {k.split("pooler.dense.")[-1]: v for k, v in base.items() if "pooler.dense." in k}
    if set(pooler) != {"weight", "bias"}:
        raise ArtifactError("the base checkpoint has no pooler; the PEFT classifier cannot be reproduced")
    n = clf["weight"].shape[0]
    cfg = HeadConfig(
        kind="classification" if n > 1 else "regression",
        num_labels=n,
        layers=2,
        activation="tanh",
        pooling="first_token",
        dropout=0.1,
    )
    weights = {
        "dense.weight": pooler["weight"],
        "dense.bias": pooler["bias"],
        "out.weight": clf["weight"],
        "out.bias": clf["bias"],
    }
    return cfg, weights
