"""Parameter merging of task tensors, with PEFT 0.21's semantics (`peft.utils.merge_utils`): `linear`
(weighted sum), `ties` (trim each tensor to its top `density` magnitudes, elect the sign by the summed
mass, disjoint mean of the agreeing values), `dare_linear` and `dare_ties` (drop each value with
probability 1 − density, rescale the kept by 1/density, then sum or TIES), `magnitude_prune` (trim, then
sum). DARE's drops draw from `generator`, so a seeded merge is reproducible. Each method's package
decides what its task tensors are (a LoRA's A and B, a bottleneck adapter's parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from composer.errors import ConfigError

Method = Literal["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"]
METHODS: tuple[str, ...] = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


def _trim(t: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1:
        return t
    k = int(density * t.numel())
    mask = torch.zeros_like(t).reshape(-1)
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True)[1]] = 1
    return t * mask.reshape(t.shape)


def _drop(t: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    if density >= 1:
        return t
    keep = torch.bernoulli(torch.full_like(t, density), generator=generator)
    return t * keep / density


def _disjoint(stacked: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
    sign = torch.where(stacked.sum(dim=0) >= 0, 1, -1)  # PEFT's "total": the sign of the summed mass
    agree = stacked.sign() == sign
    return (weighted * agree).sum(dim=0) / torch.clamp(agree.sum(dim=0), min=1.0)


def combine(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | torch.Tensor,
    method: str,
    density: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One merged tensor from the members' tensors of one parameter, by `method`."""
    if method not in METHODS:
        raise ConfigError(f"unknown merge method {method!r}; known: {list(METHODS)}")
    if not 0 < density <= 1:
        raise ConfigError(f"density must be in (0, 1], got {density}")
    if method in ("ties", "magnitude_prune"):
        tensors = [_trim(t, density) for t in tensors]
    elif method in ("dare_linear", "dare_ties"):
        tensors = [_drop(t, density, generator) for t in tensors]
    stacked = torch.stack(list(tensors), dim=0)
    w = torch.as_tensor(weights, dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    weighted = stacked * w
    if method in ("ties", "dare_ties"):
        return _disjoint(stacked, weighted)
    return weighted.sum(dim=0)
