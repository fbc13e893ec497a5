"""Site handlers: what each (layer, placement) site computes for the active composition."""

from __future__ import annotations

from collections.abc import Callable

import torch

from composer.adapters.bottleneck import BottleneckAdapter, BottleneckLayer, site_key
from composer.adapters.config import Placement
from composer.adapters.fusion import Fusion, StackedSite

LayerNorm = Callable[[torch.Tensor], torch.Tensor]
Handler = Callable[[int, Placement, torch.Tensor, torch.Tensor, LayerNorm], torch.Tensor]


def single(adapter: BottleneckAdapter) -> Handler:
    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        site = adapter.site(layer, placement)
        return ln(x + r) if site is None else site(x, r, ln)

    return handle


def _stamp(adapters: list[BottleneckAdapter]) -> tuple[int, ...]:
    return tuple(v for a in adapters for p in a.parameters() for v in (p._version, p.data_ptr()))


class FusePlan:
    """A fusion's member adapters stacked per site (one down GEMM, one up GEMM), built once and kept
    while the fusion is loaded. The fusion's own precomposed inference matrices live on each
    `StackedSite` and follow the fusion's weights. If a member's weights change, the plan rebuilds."""

    def __init__(self, fusion: Fusion, adapters: list[BottleneckAdapter]):
        self.fusion, self.adapters = fusion, adapters
        self._build()

    def _build(self) -> None:
        self.stamp = _stamp(self.adapters)
        self.stacks = {key: StackedSite([a.sites[key] for a in self.adapters]) for key in self.fusion.site_keys}  # type: ignore[misc]

    def warm(self) -> None:
        """Precompose each site's inference matrices now (serving does this at load, not per request)."""
        for key, stack in self.stacks.items():
            stack.inference_weights(self.fusion.layer(key))

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.stacks.values())

    def handler(self, capture: dict[str, torch.Tensor] | None = None) -> Handler:
        """A site handler for one forward; with `capture`, each site's attention [B, T, N] is stored in it."""
        if _stamp(self.adapters) != self.stamp:
            self._build()
        stacks, fusion = self.stacks, self.fusion

        def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
            key = site_key(layer, placement)
            stack = stacks.get(key)
            if stack is None:
                return ln(x + r)
            last = stack.last
            h, res = last.pre(x, r, ln)
            flat = h.reshape(-1, h.shape[-1])
            context, probs = fusion.layer(key).attend(stack, flat)
            if capture is not None:
                capture[key] = probs.view(*h.shape[:-1], -1).detach()
            return last.post(context.view_as(h) + res, x, r, ln)

        return handle


def _gatherable(adapters: list[BottleneckAdapter | None]) -> bool:
    if any(a is None for a in adapters):
        return False
    first = adapters[0].cfg  # type: ignore[union-attr]
    same = ("mh_adapter", "output_adapter", "original_ln_before", "original_ln_after", "residual_before_ln",
            "adapter_residual_before_ln", "is_parallel", "non_linearity", "leave_out", "ln_before", "ln_after")  # fmt: skip
    return (
        all(all(getattr(a.cfg, f) == getattr(first, f) for f in same) for a in adapters)
        and not first.ln_before
        and not first.ln_after
    )  # type: ignore[union-attr]


class GatheredSite:
    """Each row's own adapter weights gathered for one site (Punica's BGMV for bottleneck adapters).

    Adapters of one bottleneck size: the rows' `down`/`up` weights and biases are stacked as they are
    (no copy per adapter, no padding) and two batched matmuls apply them, with the scaling applied after
    the up-projection as the reference does. Different sizes: the distinct adapters are stacked once,
    zero-padded to the widest, and each row gathers its slice."""

    def __init__(self, layers: list[BottleneckLayer], rows: torch.Tensor):
        self.last, self.act = layers[0], layers[0].act
        if len({lay.down.out_features for lay in layers}) == 1:
            per_row = [layers[i] for i in rows.tolist()]
            self.w_down = torch.stack([lay.down.weight for lay in per_row]).transpose(1, 2)  # [B, H, r]
            self.b_down = torch.stack([lay.down.bias for lay in per_row]).unsqueeze(1)  # [B, 1, r]
            self.w_up = torch.stack([lay.up.weight for lay in per_row]).transpose(1, 2)  # [B, r, H]
            self.b_up = torch.stack([lay.up.bias for lay in per_row]).unsqueeze(1)  # [B, 1, H]
            scales = [lay.scaling for lay in per_row]
            self.scale = None if all(isinstance(s, float) and s == 1.0 for s in scales) else _scales(scales, self.b_up)
            return
        stack = StackedSite(layers)
        n, r, hidden = stack.n, stack.r, stack.w_up.shape[1]
        self.w_down = stack.w_down.view(n, r, hidden)[rows].transpose(1, 2)
        self.b_down = stack.b_down.view(n, r)[rows].unsqueeze(1)
        self.w_up = stack.w_up.view(n, r, hidden)[rows]  # scaled
        self.b_up = stack.b_up[rows].unsqueeze(1)
        self.scale = None

    def __call__(self, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        h, res = self.last.pre(x, r, ln)
        up = torch.baddbmm(self.b_up, self.act(torch.baddbmm(self.b_down, h, self.w_down)), self.w_up)
        if self.scale is not None:
            up = up * self.scale
        return self.last.post(self.last.finish(up, res), x, r, ln)


def _scales(scales: list[float | torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    values = [s.detach().reshape(()) if isinstance(s, torch.Tensor) else like.new_tensor(s) for s in scales]
    return torch.stack(values).view(-1, 1, 1)


def mixed(adapters: list[BottleneckAdapter | None]) -> Handler:
    """Rows routed to different adapters in one forward. Adapters of one layout: each row gathers its
    adapter's stacked weights (two batched matmuls per site); otherwise rows are grouped per adapter and
    scattered back. Either way every row computes exactly what it would alone."""
    if _gatherable(adapters):
        distinct = list(dict.fromkeys(id(a) for a in adapters))
        by_id = {id(a): a for a in adapters}
        rows = torch.tensor([distinct.index(id(a)) for a in adapters])
        first: BottleneckAdapter = adapters[0]  # type: ignore[assignment]
        sites = {key: GatheredSite([by_id[i].sites[key] for i in distinct], rows) for key in first.sites}  # type: ignore[union-attr]

        def gathered(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
            site = sites.get(site_key(layer, placement))
            return ln(x + r) if site is None else site(x, r, ln)

        return gathered
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
