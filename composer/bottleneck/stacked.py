"""N bottleneck layers of one site stacked: their N down-projections as one GEMM, their up-projections
folded so that the [tokens, N, H] outputs are never built. A fusion attends over a stack; a mixed batch
of adapters of different sizes gathers each row's slice of one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from composer.errors import ConfigError
from composer.heads import activation


class StackedSite:
    """The N adapters of one site as one down GEMM and one batched up matmul (frozen snapshot)."""

    def __init__(self, layers: list[Any]):  # the bottleneck layers of one site
        first = layers[0]
        if any(lay.norm_before is not None or lay.norm_after is not None for lay in layers):
            raise ConfigError("adapters with their own LayerNorms cannot be stacked for fusion")
        acts = {lay.cfg.non_linearity for lay in layers}
        if len(acts) != 1:
            raise ConfigError(f"fused adapters must share one non-linearity, got {sorted(acts)}")
        self.act = activation(first.cfg.non_linearity)
        self.last = layers[-1]
        n, hidden = len(layers), first.up.out_features
        r = max(lay.down.out_features for lay in layers)
        dev, dt = first.down.weight.device, first.down.weight.dtype
        wd = torch.zeros(n, r, hidden, device=dev, dtype=dt)
        bd = torch.zeros(n, r, device=dev, dtype=dt)
        wu = torch.zeros(n, r, hidden, device=dev, dtype=dt)  # zero rows: padded units contribute nothing
        bu = torch.zeros(n, hidden, device=dev, dtype=dt)
        scale = torch.ones(n, device=dev, dtype=dt)
        with torch.no_grad():
            for i, lay in enumerate(layers):
                k = lay.down.out_features
                wd[i, :k], bd[i, :k] = lay.down.weight, lay.down.bias
                wu[i, :k], bu[i] = lay.up.weight.t(), lay.up.bias
                scale[i] = lay.scaling if isinstance(lay.scaling, float) else lay.scaling.detach().reshape(())
        self.n, self.r = n, r
        self.w_down, self.b_down = wd.reshape(n * r, hidden), bd.reshape(n * r)
        self.w_up = (wu * scale[:, None, None]).reshape(n * r, hidden)  # scaled, stacked: [N*r, H]
        self.w_up_t = self.w_up.t().contiguous()  # [H, N*r]
        self.b_up = bu * scale[:, None]  # [N, H]
        # what a fusion precomposes over this stack for inference (`composer.fusion.modules.inference_weights`)
        self._cache: tuple[tuple[int, ...], torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def nbytes(self) -> int:
        kept = [self.w_down, self.b_down, self.w_up, self.w_up_t, self.b_up, *(self._cache[1:] if self._cache else ())]
        return sum(t.numel() * t.element_size() for t in kept)

    def down(self, h: torch.Tensor) -> torch.Tensor:
        """All N bottleneck activations in one GEMM: [M, H] -> [M, N*r]."""
        return self.act(nn.functional.linear(h, self.w_down, self.b_down))

    def ups(self, h: torch.Tensor) -> torch.Tensor:
        """The scaled bottleneck outputs [M, N, H] (for inspection and tests; fusion never builds them)."""
        d = self.down(h).view(h.shape[0], self.n, self.r)
        return torch.einsum("mnr,nrh->mnh", d, self.w_up.view(self.n, self.r, -1)) + self.b_up
