"""Merging bottleneck adapters of one config into one: each parameter merged across the members with
`composer.merging.combine` (linear: AdapterHub's `average_adapter` with the given weights; TIES, DARE,
magnitude pruning as PEFT defines them on task tensors). Members must share their config, and so their
shapes; merges are meaningful only from one starting point (the service checks the registry's record)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from composer.adapter_artifact import AdapterArtifact
from composer.bottleneck.modules import BottleneckConfig
from composer.errors import ConfigError
from composer.merging import METHODS, combine


def merge_bottlenecks(
    members: Sequence[AdapterArtifact], weights: Sequence[float], method: str, density: float = 1.0, seed: int = 0
) -> tuple[BottleneckConfig, dict[str, torch.Tensor]]:
    if method not in METHODS:
        raise ConfigError(f"unknown merge method {method!r} for bottleneck adapters; known: {list(METHODS)}")
    cfgs = [m.config for m in members]
    if not all(isinstance(c, BottleneckConfig) for c in cfgs) or len({str(c.to_dict()) for c in cfgs}) != 1:
        raise ConfigError("bottleneck adapters merge only with one config (placements, sizes, options)")
    keys = [sorted(k for k in m.tensors if k.startswith("adapter.")) for m in members]
    if any(k != keys[0] for k in keys):
        raise ConfigError("the adapters' parameters differ and cannot be merged")
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: combine([m.tensors[k] for m in members], weights, method, density, gen) for k in keys[0]}
    return cfgs[0], tensors  # type: ignore[return-value]
