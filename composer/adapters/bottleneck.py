"""Bottleneck adapter modules: one `BottleneckLayer` per (layer, placement) site.

A site sees the sublayer output `x` (before the residual add), the residual input `r`
and the encoder's own LayerNorm. The computation follows AdapterHub `adapters` 1.3.0
(`Adapter.pre_forward / forward / post_forward` and `ParallelAdapter`) exactly, so
imported adapters give the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from composer.adapters.config import BottleneckConfig
from composer.heads import Linear, activation
from composer.injection import PLACEMENTS, Placement


def site_key(layer: int, placement: Placement) -> str:
    return f"L{layer}_{placement}"


class BottleneckLayer(nn.Module):
    def __init__(self, cfg: BottleneckConfig, hidden_size: int):
        super().__init__()
        self.cfg = cfg
        size = cfg.bottleneck_size(hidden_size)
        self.norm_before = nn.LayerNorm(hidden_size) if cfg.ln_before else None
        self.down = Linear(hidden_size, size)
        self.act = activation(cfg.non_linearity)
        self.up = Linear(size, hidden_size)
        if cfg.scaling == "learned":
            self.scaling: nn.Parameter | float = nn.Parameter(torch.ones(1))
        else:
            self.scaling = float(cfg.scaling)
        self.norm_after = nn.LayerNorm(hidden_size) if cfg.ln_after else None
        self.dropout = nn.Dropout(cfg.dropout)
        if not self.down.weight.is_meta:  # built on meta, it is about to be given its weights
            self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            scheme = self.cfg.init_weights
            for lin in (self.down, self.up):
                nn.init.zeros_(lin.bias)
            if scheme == "bert":
                self.down.weight.normal_(0.0, 0.02)
                self.up.weight.normal_(0.0, 0.02)
            elif scheme == "mam_adapter":
                nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
                nn.init.zeros_(self.up.weight)
            else:  # houlsby
                for lin in (self.down, self.up):
                    nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2)

    # -- the three phases, as in the reference -------------------------------------------
    def pre(self, x: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (adapter input, adapter residual)."""
        if self.cfg.is_parallel:
            return r, r
        h = x
        if self.cfg.original_ln_before:
            h = layer_norm(x + r)
        return h, (x if self.cfg.residual_before_ln else h)

    def delta(self, h: torch.Tensor) -> torch.Tensor:
        """The scaled bottleneck output `s * f(h W_down) W_up` (before any residual)."""
        if self.norm_before is not None:
            h = self.norm_before(h)
        return self.dropout(self.up(self.act(self.down(h))) * self.scaling)

    def finish(self, up: torch.Tensor, adapter_residual: torch.Tensor) -> torch.Tensor:
        """Apply the adapter's own residual and optional LayerNorm to a bottleneck output."""
        if self.cfg.is_parallel:
            return self.norm_after(up) if self.norm_after is not None else up
        out = up
        if self.cfg.adapter_residual_before_ln:
            out = out + adapter_residual
        if self.norm_after is not None:
            out = self.norm_after(out)
        if not self.cfg.adapter_residual_before_ln:
            out = out + adapter_residual
        return out

    def post(self, out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module) -> torch.Tensor:
        if self.cfg.is_parallel:
            out = out + x
        if self.cfg.original_ln_after:
            out = layer_norm(out + r)
        return out

    def forward(self, x: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module) -> torch.Tensor:
        h, res = self.pre(x, r, layer_norm)
        return self.post(self.finish(self.delta(h), res), x, r, layer_norm)


class BottleneckAdapter(nn.Module):
    """All sites of one adapter across the encoder's layers."""

    def __init__(self, cfg: BottleneckConfig, hidden_size: int, num_layers: int):
        super().__init__()
        self.cfg = cfg
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.sites = nn.ModuleDict(
            {
                site_key(i, p): BottleneckLayer(cfg, hidden_size)
                for i in range(num_layers)
                if i not in cfg.leave_out
                for p in PLACEMENTS
                if p in cfg.placements
            }
        )

    def site(self, layer: int, placement: Placement) -> BottleneckLayer | None:
        key = site_key(layer, placement)
        return self.sites[key] if key in self.sites else None  # type: ignore[return-value]
