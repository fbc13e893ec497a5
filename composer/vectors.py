"""Methods that hold one vector per adapted linear projection ((IA)³'s scales, BitFit's bias shifts), and how
rows on different modules of such a method share one forward.

A module keeps its vectors by site (`L<layer>_<linear>`) and says per site how a vector acts on the linear
(`stage(key)`): on its input or its output, by a product or a sum. For a batch whose row i runs module i
(None: not this method), the bare linear runs once for the whole batch, and each module's vectors act on its own
rows: in place on the rows' slices when the batch has few runs of rows (`composer.runs`), otherwise gathered
into [B, 1, D] per site, with the neutral value (a scale of 1, a shift of 0) for the rows without one, acting
once on the whole batch; a neutral row is computed exactly as the bare linear (x·1 and y+0 are exact).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from composer.injection import PRIVATE_INPUTS, LinearHandler, site_name
from composer.runs import few_runs, row_runs

Act = tuple[bool, torch.Tensor, list[slice]]  # (a product, else a sum; the vector; the rows' slices)


class VectorAdapter(nn.Module):
    """One vector per (layer, linear) site; subclasses say where and how it acts (`stage`)."""

    slot = "linear"  # it wraps linear projections (the scope's linear handler)
    neutral: float = 0.0  # the value a fresh vector starts at: it leaves the linear as it is

    def __init__(self, cfg: Any, sizes: dict[tuple[int, str], int]):
        super().__init__()
        self.cfg = cfg
        self.vectors = nn.ParameterDict(
            {site_name(*k): nn.Parameter(torch.full((d,), float(self.neutral))) for k, d in sizes.items()}
        )
        self.sites = {k: site_name(*k) for k in sizes}

    @property
    def by_target(self) -> dict[tuple[int, str], torch.Tensor]:
        """The vectors by (layer, linear), read now (loading with `assign=True` replaces the parameters)."""
        return {k: self.vectors[n] for k, n in self.sites.items()}

    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.sites})

    def stage(self, key: tuple[int, str]) -> tuple[str, str]:
        """(where, how) the vector at `key` acts: "input" or "output" of the linear, by "mul" or "add"."""
        raise NotImplementedError

    def act(
        self, key: tuple[int, str], x: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor
    ) -> torch.Tensor:
        where, how = self.stage(key)
        if where == "input":
            return linear(x * v if how == "mul" else x + v)
        return linear(x) * v if how == "mul" else linear(x) + v

    @classmethod
    def route(cls, adapters: list[VectorAdapter | None]) -> LinearHandler | None:
        """The linear handler for a batch whose row i runs module i (None: none of this method)."""
        distinct = list(dict.fromkeys(a for a in adapters if a is not None))
        if not distinct:
            return None
        if len(distinct) == 1 and all(a is distinct[0] for a in adapters):
            only, vectors = distinct[0], distinct[0].by_target

            def single(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
                v = vectors.get((layer, name))
                return None if v is None else only.act((layer, name), x, linear, v)

            return single
        runs = row_runs(adapters)
        return _on_runs(runs) if few_runs(runs, len(adapters)) else _gathered(adapters, distinct)


def _on_runs(runs: dict[VectorAdapter, list[slice]]) -> LinearHandler:
    """Each module's vectors on its rows' slices, in place: on the input (a copy of it, unless nothing else reads
    it and no gradient is taken), then on the linear's output. What acts where is read once per forward."""
    table: dict[tuple[int, str], tuple[list[Act], list[Act]]] = {}  # per site: (on the input, on the output)
    for a, slices in runs.items():
        for key, v in a.by_target.items():
            where, how = a.stage(key)
            table.setdefault(key, ([], []))[where == "output"].append((how == "mul", v, slices))

    def handle(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
        acts = table.get((layer, name))
        if acts is None:
            return None
        inputs, outputs = acts
        if inputs:
            if name not in PRIVATE_INPUTS or torch.is_grad_enabled():
                x = x.clone()
            for mul, v, slices in inputs:
                for rows in slices:
                    x[rows].mul_(v) if mul else x[rows].add_(v)
        out = linear(x)
        for mul, v, slices in outputs:
            for rows in slices:  # in place on the rows' view of the linear's output (its backward needs no output)
                out[rows].mul_(v) if mul else out[rows].add_(v)
        return out

    return handle


def _gathered(adapters: list[VectorAdapter | None], distinct: list[VectorAdapter]) -> LinearHandler:
    """Per site and stage, every row's vector gathered into [B, 1, D] (neutral for the rows without one)."""
    keys = {k for a in distinct for k in a.sites}
    stacks: dict[tuple[int, str], list[tuple[VectorAdapter, torch.Tensor]]] = {}

    def stack(key: tuple[int, str]) -> list[tuple[VectorAdapter, torch.Tensor]]:
        """Per stage at `key`: a module of that stage, and every row's vector [B, 1, D] (neutral elsewhere)."""
        groups: dict[tuple[str, str], VectorAdapter] = {}
        for a in distinct:
            if key in a.sites:
                groups.setdefault(a.stage(key), a)
        out = []
        for stage, owner in groups.items():
            some = owner.vectors[owner.sites[key]]
            neutral = some.new_full((1, some.shape[0]), 1.0 if stage[1] == "mul" else 0.0)
            rows = [
                a.vectors[a.sites[key]].unsqueeze(0)
                if a is not None and key in a.sites and a.stage(key) == stage
                else neutral
                for a in adapters
            ]
            out.append((owner, torch.cat(rows).unsqueeze(1)))
        return out

    def handle(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
        key = (layer, name)
        if key not in keys:
            return None
        if key not in stacks:
            stacks[key] = stack(key)
        run = linear
        for owner, v in reversed(stacks[key]):  # the first stage outermost
            run = (lambda o, vv, inner: lambda h: o.act(key, h, inner, vv))(owner, v, run)
        return run(x)

    return handle
