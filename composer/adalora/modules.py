"""AdaLoRA (Zhang et al. 2023), with PEFT 0.21's numerics (`adalora.SVDLinear`).

Each adapted linear adds `x (A ⊙ E)^T B^T · alpha / (init_r + 1e-5)`: P = B [out, r] and Q = A [r, in] are
the singular vectors, E [r, 1] the singular values. Training starts at `init_r` triplets per linear; the
`RankAllocator` (allocator.py) masks the least important triplets' E to zero until `target_r` per linear remain
on average, and an orthogonality penalty keeps P and Q near orthonormal. Saved, each linear keeps only its
kept triplets (`rank_pattern`: how many, per site), and it serves as a LoRA of variable rank: gathered per row in
mixed batches with LoRA's own routing (A ⊙ E is the LoRA's A). The scaling keeps init_r, as PEFT's does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from composer.errors import ConfigError
from composer.injection import (
    LinearTargets,
    config_from_dict,
    site_name,
)
from composer.lora.modules import LoraAdapter, LoraLinear


@dataclass(frozen=True)
class AdaLoraConfig(LinearTargets):
    init_r: int = 12
    target_r: int = 8
    alpha: float = 8.0  # PEFT's lora_alpha
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: query and value, as LoRA
    layers: tuple[int, ...] | None = None
    tinit: int = 0  # steps before the budget starts to fall
    tfinal: int = 0  # steps at the final budget at the end
    deltaT: int = 1  # noqa: N815 - PEFT's name: steps between two allocations
    beta1: float = 0.85  # EMA of the sensitivity
    beta2: float = 0.85  # EMA of its uncertainty
    orth_reg_weight: float = 0.5
    rank_pattern: dict[str, int] | None = None  # saved: the kept triplets per site (site name -> count)

    fusable = False
    default_targets: ClassVar[str] = "default_lora_targets"  # query and value, as LoRA
    method: ClassVar[str] = "adalora"
    default_kind: ClassVar[str] = "adalora"

    def __post_init__(self) -> None:
        for name in ("init_r", "target_r"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.target_r > self.init_r:
            raise ConfigError(f"target_r ({self.target_r}) cannot exceed init_r ({self.init_r})")
        for name in ("tinit", "tfinal"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.deltaT, int) or self.deltaT < 1:
            raise ConfigError(f"deltaT must be an integer >= 1, got {self.deltaT!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        if self.orth_reg_weight < 0 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("orth_reg_weight must be >= 0, alpha > 0 and dropout in [0, 1)")
        self.normalise_targets()
        if self.rank_pattern is not None:
            bad = {k: v for k, v in self.rank_pattern.items() if not isinstance(v, int) or not 0 <= v <= self.init_r}
            if bad or not isinstance(self.rank_pattern, dict):
                raise ConfigError(f"rank_pattern: each site keeps 0..init_r ({self.init_r}) triplets, got {bad}")

    @property
    def scaling(self) -> float:
        return self.alpha / (self.init_r + 1e-5)

    def build(self, model: Any) -> AdaLoraAdapter:
        return AdaLoraAdapter(self, self.adapted_shapes(model))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaLoraConfig:
        return config_from_dict(cls, data, "AdaLoRA")


class SVDLinear(LoraLinear):
    """One linear's triplets: lora_A [r, in], lora_E [r, 1], lora_B [out, r] (PEFT's initialisation: E at zero,
    A and B from N(0, 0.02²)). As a LoRA, its A is A ⊙ E."""

    def __init__(self, in_features: int, out_features: int, rank: int, cfg: AdaLoraConfig):
        nn.Module.__init__(self)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_E = nn.Parameter(torch.zeros(rank, 1))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank))
        if not self.lora_A.is_meta:
            nn.init.normal_(self.lora_A, 0.0, 0.02)
            nn.init.normal_(self.lora_B, 0.0, 0.02)
        self.scaling = cfg.scaling
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()

    @property
    def A(self) -> torch.Tensor:  # noqa: N802 - LoRA's name for it
        if torch.is_grad_enabled():  # training: through autograd
            return self.lora_A * self.lora_E
        # serving: derived from the weights once per set of values (like a saved diff's CSR), not per call
        key = tuple((t.data_ptr(), t._version) for t in (self.lora_A, self.lora_E))
        cached = self.__dict__.get("_served_A")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_served_A"] = (key, (self.lora_A * self.lora_E).detach())
        return cached[1]

    @property
    def B(self) -> torch.Tensor:  # noqa: N802
        return self.lora_B


class AdaLoraAdapter(LoraAdapter):
    """The triplets of one adapter. Built from a saved config (with `rank_pattern`), each site has its kept rank
    (sites that kept none are left out); built for training, every site has init_r."""

    def __init__(self, cfg: AdaLoraConfig, shapes: dict[tuple[int, str], tuple[int, int]]):
        nn.Module.__init__(self)
        self.cfg = cfg  # type: ignore[assignment]
        pattern = cfg.rank_pattern
        ranks = {k: (pattern.get(site_name(*k), 0) if pattern is not None else cfg.init_r) for k in shapes}
        self.sites = nn.ModuleDict(
            {site_name(*k): SVDLinear(fi, fo, ranks[k], cfg) for k, (fi, fo) in shapes.items() if ranks[k] > 0}
        )
        self.by_target = {k: self.sites[site_name(*k)] for k in shapes if ranks[k] > 0}  # type: ignore[misc]
        self.shapes = shapes

    def orthogonality(self) -> torch.Tensor:
        """PEFT's regulariser: the mean over every A and B of ||cov - I||_F (A A^T for A, B^T B for B)."""
        terms = []
        for site in self.by_target.values():
            for cov in (site.lora_A @ site.lora_A.T, site.lora_B.T @ site.lora_B):
                terms.append(
                    torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype))
                )
        return torch.stack(terms).mean() if terms else torch.zeros(())

    def pruned(self, keep: dict[str, torch.Tensor]) -> tuple[AdaLoraConfig, dict[str, torch.Tensor]]:
        """The config and state dict a saved artifact holds: each site's kept triplets (`keep`: site -> bool [r])."""
        tensors, pattern = {}, {}
        for name, site in self.sites.items():
            mask = keep[name].to(site.lora_A.device)
            pattern[name] = int(mask.sum())
            if pattern[name]:
                tensors[f"sites.{name}.lora_A"] = site.lora_A[mask].detach().cpu().clone()
                tensors[f"sites.{name}.lora_E"] = site.lora_E[mask].detach().cpu().clone()
                tensors[f"sites.{name}.lora_B"] = site.lora_B[:, mask].detach().cpu().clone()
        return dataclasses.replace(self.cfg, rank_pattern=pattern), tensors  # type: ignore[arg-type]


def training_hooks(module: AdaLoraAdapter) -> Any:
    from composer.adalora.allocator import TrainingHooks

    return TrainingHooks(module)


AdaLoraAdapter.training_hooks = training_hooks  # type: ignore[attr-defined]
