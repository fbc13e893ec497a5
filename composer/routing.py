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


def mixed(adapters: list[BottleneckAdapter | None]) -> Handler:
    """Rows routed to different adapters in one forward: group the rows of each adapter, run its
    site on them, scatter the results back. Every row computes exactly what it would alone."""
    groups: dict[int, list[int]] = {}
    for row, a in enumerate(adapters):
        groups.setdefault(id(a), []).append(row)
    plan = [(adapters[rows[0]], torch.tensor(rows)) for rows in groups.values()]

    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        if len(plan) == 1:
            site = plan[0][0].site(layer, placement) if plan[0][0] is not None else None
            return ln(x + r) if site is None else site(x, r, ln)
        out = torch.empty_like(x)
        for adapter, rows in plan:
            rows = rows.to(x.device)
            xs, rs = x.index_select(0, rows), r.index_select(0, rows)
            site = adapter.site(layer, placement) if adapter is not None else None
            out.index_copy_(0, rows, ln(xs + rs) if site is None else site(xs, rs, ln))
        return out

    return handle
