"""LoRA (Hu et al., 2021): a low-rank update `x A^T B^T * alpha/r` added to chosen linear projections.

The numerics follow PEFT 0.21 (`lora.Linear`: `base(x) + lora_B(lora_A(dropout(x))) * scaling`) and
AdapterHub `adapters` 1.3.0 (`LoRALinear`, composition "add"), which compute the same thing. The
projections are the encoder's own linears; `composer.injection` lets each of them add what the
forward's scope asks for, so a LoRA is never merged into shared weights and rows of one batch can
use different LoRAs: each row gathers its own A and B, as Punica's BGMV kernel does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from composer.errors import ConfigError
from composer.injection import (
    LinearHandler,
    LinearTargets,
    config_from_dict,
    linear_shapes,
    site_name,
)
from composer.runs import add_on_runs, few_runs, row_runs


@dataclass(frozen=True)
class LoraConfig(LinearTargets):
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # linear names (or their last parts); None: query and value
    layers: tuple[int, ...] | None = None  # PEFT's layers_to_transform; None: every layer
    use_rslora: bool = False  # scaling alpha / sqrt(r) instead of alpha / r

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"r (the LoRA rank) must be an integer >= 1, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ConfigError(f"alpha must be a number > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self.normalise_targets()

    fusable = False  # AdapterFusion fuses bottleneck adapters, not low-rank updates
    default_targets: ClassVar[str] = "default_lora_targets"  # query and value
    method: ClassVar[str] = "lora"  # what an artifact's config records
    default_kind: ClassVar[str] = "lora"

    def build(self, model: Any) -> LoraAdapter:
        """The LoRA these fields describe, on `model`'s (an AdaptedEncoder's) linear projections."""
        return LoraAdapter.for_encoder(self, model.encoder, model.base.family, model.base.num_layers)

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraConfig:
        return config_from_dict(cls, data, "LoRA")


class LoraLinear(nn.Module):
    """The update of one linear: A [r, in], B [out, r]; B starts at zero, so training starts from the base."""

    def __init__(self, in_features: int, out_features: int, cfg: LoraConfig):
        super().__init__()
        self.A = nn.Parameter(torch.empty(cfg.r, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, cfg.r))
        if not self.A.is_meta:  # on meta: about to be given its weights
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear, PEFT and AdapterHub do
        self.scaling = cfg.scaling
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(nn.functional.linear(self.dropout(x), self.A), self.B) * self.scaling

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """out += forward(x), in place: the up-projection, its scaling and the sum in one addmm on `out` viewed as a
        matrix (a linear's output and a batch's rows' slice of it both view so)."""
        h = nn.functional.linear(self.dropout(x), self.A)
        out.view(-1, out.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), self.B.t(), alpha=self.scaling)


class LoraAdapter(nn.Module):
    """The LoRA updates of one adapter, one `LoraLinear` per (layer, target linear)."""

    slot = "linear"  # it updates linear projections (the scope's linear handler)

    @staticmethod
    def route(adapters: list[LoraAdapter | None]) -> LinearHandler | None:
        """The linear handler for a batch whose row i runs LoRA i (None: no LoRA)."""
        return gathered(adapters)

    def __init__(self, cfg: LoraConfig, shapes: dict[tuple[int, str], tuple[int, int]]):
        super().__init__()
        self.cfg = cfg
        self.sites = nn.ModuleDict({site_name(i, n): LoraLinear(fi, fo, cfg) for (i, n), (fi, fo) in shapes.items()})
        self.by_target: dict[tuple[int, str], LoraLinear] = {k: self.sites[site_name(*k)] for k in shapes}  # type: ignore[misc]

    def layers(self) -> list[int]:
        """The layers whose projections this LoRA updates."""
        return sorted({layer for layer, _ in self.by_target})

    @classmethod
    def for_encoder(cls, cfg: LoraConfig, model: nn.Module, family: str, num_layers: int) -> LoraAdapter:
        return cls(cfg, linear_shapes(model, family, cfg.targets(family), cfg.layers, num_layers))

    def handler(self) -> LinearHandler:
        by_target = self.by_target

        def handle(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
            site = by_target.get((layer, name))
            return None if site is None else linear(x) + site(x)

        return handle


def gathered(adapters: list[LoraAdapter | None]) -> LinearHandler | None:
    """Rows on different LoRAs (None: no LoRA) in one forward. Few runs of rows (`composer.runs`): each LoRA on
    its slices. Otherwise as Punica's BGMV: per linear, each row gathers
    its own A and B (stacked as they are when the ranks agree; otherwise zero-padded to the widest) and two
    batched matmuls apply them, scaled after B as the reference does. Where only some rows have a LoRA at a
    linear, only those rows are gathered and their updates are added to their rows (the others keep the bare
    linear's output, computed once for the whole batch)."""
    distinct = list(dict.fromkeys(a for a in adapters if a is not None))
    if not distinct:
        return None
    if len(distinct) == 1 and all(a is distinct[0] for a in adapters):
        return distinct[0].handler()
    runs = row_runs(adapters)
    if few_runs(runs, len(adapters)):
        return add_on_runs(runs, lambda a: {k: site.add_to for k, site in a.by_target.items()})
    keys = {k for a in distinct for k in a.by_target}
    stacks: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def stack(key: tuple[int, str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every row's A, B and scale (all rows have a LoRA here), or those of the rows that have one and
        their indices (a row without one is left as the bare linear computed it)."""
        sites = [a.by_target.get(key) if a is not None else None for a in adapters]
        some = next(s for s in sites if s is not None)
        if any(s is None for s in sites):
            rows = [i for i, s in enumerate(sites) if s is not None]
            live = torch.tensor(rows, device=some.A.device)
            return (*pad([sites[i] for i in rows], some), live)  # type: ignore[misc]
        return (*pad(sites, some), None)  # type: ignore[misc]

    def pad(sites: list, some) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def,type-arg]
        scale = some.A.new_tensor([s.scaling if s is not None else 0.0 for s in sites]).view(-1, 1, 1)
        if len({s.A.shape[0] for s in sites if s is not None}) == 1:
            a_rows = torch.stack([(s or some).A for s in sites])  # [B, r, in]
            b_rows = torch.stack([(s or some).B for s in sites])  # [B, out, r]
            return a_rows, b_rows, scale
        r = max(s.A.shape[0] for s in sites if s is not None)
        a_rows = some.A.new_zeros(len(sites), r, some.A.shape[1])
        b_rows = some.B.new_zeros(len(sites), some.B.shape[0], r)
        for i, s in enumerate(sites):
            if s is not None:
                a_rows[i, : s.A.shape[0]], b_rows[i, :, : s.A.shape[0]] = s.A, s.B
        return a_rows, b_rows, scale

    def handle(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
        key = (layer, name)
        if key not in keys:
            return None
        if key not in stacks:
            stacks[key] = stack(key)
        a_rows, b_rows, scale, live = stacks[key]
        if live is None:
            return linear(x) + torch.bmm(torch.bmm(x, a_rows.transpose(1, 2)), b_rows.transpose(1, 2)) * scale
        # only some rows have a LoRA here: their updates alone, added to their rows
        part = x.index_select(0, live)
        delta = torch.bmm(torch.bmm(part, a_rows.transpose(1, 2)), b_rows.transpose(1, 2)) * scale
        return linear(x).index_add(0, live, delta)

    return handle
