"""Merging LoRAs into one, as PEFT 0.21's `add_weighted_adapter` does: `linear`, `ties`, `dare_linear`,
`dare_ties` and `magnitude_prune` on A and B separately (each member's weight times its scaling, its
square root on each side, the sign on A), `cat` (the members' ranks side by side, exact), and `svd`
(the weighted sum of ΔW = s·BA, truncated to a rank by SVD). The merged LoRA has scaling 1."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from composer.adapter_artifact import AdapterArtifact
from composer.errors import ConfigError
from composer.injection import FAMILIES
from composer.lora.modules import LoraConfig
from composer.merging import METHODS, combine

LORA_METHODS = (*METHODS, "cat", "svd")


def _sites(art: AdapterArtifact) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in art.tensors.items():
        if key.startswith("adapter.sites."):
            site, param = key[len("adapter.sites.") :].rsplit(".", 1)
            out.setdefault(site, {})[param] = value
    return {k: (v["A"], v["B"]) for k, v in out.items()}


def _order(site: str, family: str) -> tuple[int, int]:
    layer, name = site[1:].split("_", 1)
    linears = [n.replace(".", "_") for n in FAMILIES[family].linears]
    return int(layer), linears.index(name) if name in linears else len(linears)


def merge_loras(
    members: Sequence[AdapterArtifact],
    weights: Sequence[float],
    method: str,
    family: str,
    density: float = 1.0,
    seed: int = 0,
    rank: int | None = None,
) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """The merged LoRA's config and its `adapter.*` tensors."""
    if method not in LORA_METHODS:
        raise ConfigError(f"unknown merge method {method!r} for LoRA; known: {list(LORA_METHODS)}")
    cfgs = [m.config for m in members]
    if not all(isinstance(c, LoraConfig) for c in cfgs):
        raise ConfigError("only LoRAs merge as LoRAs")
    sites = [_sites(m) for m in members]
    if len({frozenset(s) for s in sites}) != 1:
        raise ConfigError("the LoRAs adapt different linears or layers and cannot be merged")
    ranks = [c.r for c in cfgs]  # type: ignore[union-attr]
    if method in METHODS and len(set(ranks)) != 1:
        raise ConfigError(f"{method} merges LoRAs of one rank; got ranks {ranks} (use cat or svd)")
    new_rank = sum(ranks) if method == "cat" else (rank or max(ranks)) if method == "svd" else ranks[0]
    gen = torch.Generator().manual_seed(seed)  # DARE draws in PEFT's order: per linear, A's members, then B's
    out: dict[str, torch.Tensor] = {}
    for site in sorted(sites[0], key=lambda s: _order(s, family)):
        a = [s[site][0] for s in sites]
        b = [s[site][1] for s in sites]
        scaled = [w * c.scaling for w, c in zip(weights, cfgs, strict=True)]  # type: ignore[union-attr]
        if method == "cat":
            merged_a, merged_b = torch.cat([x * s for x, s in zip(a, scaled, strict=True)], 0), torch.cat(b, 1)
        elif method == "svd":
            delta = sum(s * (bi @ ai) for s, ai, bi in zip(scaled, a, b, strict=True))
            u, sv, vh = torch.linalg.svd(delta, full_matrices=True)
            merged_b, merged_a = u[:, :new_rank] @ torch.diag(sv[:new_rank]), vh[:new_rank, :]
        else:
            w_a = [math.sqrt(abs(s)) * (1 if s >= 0 else -1) for s in scaled]
            w_b = [math.sqrt(abs(s)) for s in scaled]
            merged_a = combine(a, w_a, method, density, gen)
            merged_b = combine(b, w_b, method, density, gen)
        out[f"adapter.sites.{site}.A"] = merged_a.contiguous()
        out[f"adapter.sites.{site}.B"] = merged_b.contiguous()
    first = cfgs[0]
    cfg = LoraConfig(
        r=new_rank,
        alpha=float(new_rank),
        target_modules=first.target_modules,  # type: ignore[union-attr]
        layers=first.layers,  # type: ignore[union-attr]
    )
    return cfg, out
