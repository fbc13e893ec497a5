"""Site handlers: what each (layer, placement) site computes for the active composition."""

from __future__ import annotations

from collections.abc import Callable

import torch

from composer.bottleneck import BottleneckAdapter, site_key
from composer.config import Placement
from composer.fusion import Fusion, StackedSite

LayerNorm = Callable[[torch.Tensor], torch.Tensor]
Handler = Callable[[int, Placement, torch.Tensor, torch.Tensor, LayerNorm], torch.Tensor]


def single(adapter: BottleneckAdapter) -> Handler:
    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        site = adapter.site(layer, placement)
        return ln(x + r) if site is None else site(x, r, ln)

    return handle


def fuse(fusion: Fusion, adapters: list[BottleneckAdapter], capture: dict[str, torch.Tensor]) -> Handler:
    """Fusion over stacked adapters. When `capture` is armed (holds the key "on"), each site's
    attention probabilities [B, T, N] are stored under its site key."""
    stacks: dict[str, StackedSite] = {}
    for key in fusion.site_keys:
        layers = [a.sites[key] for a in adapters]
        stacks[key] = StackedSite(layers)  # type: ignore[arg-type]

    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        key = site_key(layer, placement)
        stack = stacks.get(key)
        if stack is None:
            return ln(x + r)
        last = stack.last
        h, res = last.pre(x, r, ln)
        flat = h.reshape(-1, h.shape[-1])
        context, probs = fusion.layer(key).attend(stack, flat)
        if "on" in capture:
            capture[key] = probs.view(*h.shape[:-1], -1).detach()
        return last.post(context.view_as(h) + res, x, r, ln)

    return handle
