"""Site handlers of bottleneck adapters: one adapter for every row (`single`), or each row its own (`mixed`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from composer.bottleneck.stacked import StackedSite
from composer.injection import Placement, site_key
from composer.runs import few_runs, row_runs

# duck-typed: a bottleneck adapter (its `sites` and `site()`) and one of its layers (`pre`, `down`, `up`, `post`, …)
Adapter = Layer = Any

LayerNorm = Callable[[torch.Tensor], torch.Tensor]
Handler = Callable[[int, Placement, torch.Tensor, torch.Tensor, LayerNorm], torch.Tensor]


def single(adapter: Adapter) -> Handler:
    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        site = adapter.site(layer, placement)
        return ln(x + r) if site is None else site(x, r, ln)

    return handle


SAME_LAYOUT = (
    "mh_adapter",
    "output_adapter",
    "original_ln_before",
    "original_ln_after",
    "residual_before_ln",
    "adapter_residual_before_ln",
    "is_parallel",
    "non_linearity",
    "leave_out",
    "ln_before",
    "ln_after",
)


def _gatherable(adapters: list[Adapter | None]) -> bool:
    """Rows can gather when the adapters they use (rows without one aside) share one layout, without
    LayerNorms of their own."""
    present = [a for a in adapters if a is not None]
    if not present:
        return False
    first = present[0].cfg
    same = all(all(getattr(a.cfg, f) == getattr(first, f) for f in SAME_LAYOUT) for a in present)
    return same and not first.ln_before and not first.ln_after


class GatheredSite:
    """Each row's own adapter weights gathered for one site (Punica's BGMV for bottleneck adapters).

    Adapters of one bottleneck size: the rows' `down`/`up` weights and biases are stacked as they are
    (no copy per adapter, no padding) and two batched matmuls apply them, with the scaling applied after
    the up-projection as the reference does. Different sizes: the distinct adapters are stacked once,
    zero-padded to the widest, and each row gathers its slice."""

    def __init__(self, layers: list[Layer], rows: torch.Tensor, bare: torch.Tensor | None = None, blocks: bool = False):
        self.last, self.act = layers[0], layers[0].act
        self.bare = bare  # rows without an adapter (a LoRA's, or the bare base's): they borrow any weights, then
        # get the site's plain output ln(x + r)
        # rows in contiguous equal blocks, one per adapter (a Parallel's layout): each adapter's weights once,
        # over all the tokens of its block
        self.blocks = len(layers) if blocks else 0
        if len({lay.down.out_features for lay in layers}) == 1:
            per_row = layers if blocks else [layers[i] for i in rows.tolist()]
            self.w_down = torch.stack([lay.down.weight for lay in per_row]).transpose(1, 2)  # [B, H, r]
            self.b_down = torch.stack([lay.down.bias for lay in per_row]).unsqueeze(1)  # [B, 1, r]
            self.w_up = torch.stack([lay.up.weight for lay in per_row]).transpose(1, 2)  # [B, r, H]
            self.b_up = torch.stack([lay.up.bias for lay in per_row]).unsqueeze(1)  # [B, 1, H]
            scales = [lay.scaling for lay in per_row]
            self.scale = None if all(isinstance(s, float) and s == 1.0 for s in scales) else _scales(scales, self.b_up)
            return
        self.blocks = 0
        stack = StackedSite(layers)
        n, r, hidden = stack.n, stack.r, stack.w_up.shape[1]
        self.w_down = stack.w_down.view(n, r, hidden)[rows].transpose(1, 2)
        self.b_down = stack.b_down.view(n, r)[rows].unsqueeze(1)
        self.w_up = stack.w_up.view(n, r, hidden)[rows]  # scaled
        self.b_up = stack.b_up[rows].unsqueeze(1)
        self.scale = None

    def __call__(self, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        h, res = self.last.pre(x, r, ln)
        shape = h.shape
        if self.blocks:
            h = h.reshape(self.blocks, -1, shape[-1])
        up = torch.baddbmm(self.b_up, self.act(torch.baddbmm(self.b_down, h, self.w_down)), self.w_up)
        if self.scale is not None:
            up = up * self.scale
        up = up.reshape(shape)
        out = self.last.post(self.last.finish(up, res), x, r, ln)
        if self.bare is None:
            return out
        bare = self.bare.to(x.device)
        return out.index_copy(0, bare, ln(x.index_select(0, bare) + r.index_select(0, bare)))


def _scales(scales: list[float | torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    values = [s.detach().reshape(()) if isinstance(s, torch.Tensor) else like.new_tensor(s) for s in scales]
    return torch.stack(values).view(-1, 1, 1)


def _on_runs(runs: dict[Adapter, list[slice]]) -> Handler:
    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        out = None
        for adapter, slices in runs.items():
            site = adapter.site(layer, placement)
            if site is None:
                continue
            if out is None:
                out = ln(x + r)
            for rows in slices:  # serving: the rows' plain output is the input of a site that takes ln(x + r)
                out[rows] = site(x[rows], r[rows], ln, out[rows] if not torch.is_grad_enabled() else None)
        return ln(x + r) if out is None else out

    return handle


def mixed(adapters: list[Adapter | None]) -> Handler:
    """Rows routed to different adapters in one forward. Adapters of one layout: each row gathers its
    adapter's stacked weights (two batched matmuls per site); otherwise rows are grouped per adapter and
    scattered back. A batch of few runs of rows (`composer.runs`), whatever the layouts: the plain site for the
    whole batch, and each adapter's site on its own rows' slices. Every row computes exactly what it would alone."""
    runs = row_runs(adapters)
    if few_runs(runs, len(adapters)):
        return _on_runs(runs)
    if _gatherable(adapters):
        distinct = list(dict.fromkeys(a for a in adapters if a is not None))
        slot = {id(a): i for i, a in enumerate(distinct)}
        rows = torch.tensor([slot[id(a)] if a is not None else 0 for a in adapters])
        none = [i for i, a in enumerate(adapters) if a is None]
        bare = torch.tensor(none) if none else None
        per = len(adapters) // len(distinct)
        blocks = bare is None and per > 1 and torch.equal(rows, torch.arange(len(distinct)).repeat_interleave(per))
        sites = {
            key: GatheredSite([a.sites[key] for a in distinct], rows, bare, blocks)  # type: ignore[misc]
            for key in distinct[0].sites
        }

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
