"""Methods that hold one vector per adapted linear projection ((IA)³'s scales, BitFit's bias shifts), and how
rows on different modules of such a method share one forward.

A module keeps its vectors by site (`L<layer>_<linear>`), says per site how a vector acts on the linear
(`act(key, x, linear, v)`), and what leaves a row as it is (`neutral`: a scale of 1, a shift of 0). For a batch
whose row i runs module i (None: not this method), each site gathers every row's vector into [B, 1, D], the
neutral value for the rows without one, and acts once for the whole batch; a neutral row is computed exactly
as the bare linear (x·1 and y+0 are exact in floating point).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from composer.injection import LinearHandler, site_name


class VectorAdapter(nn.Module):
    """One vector per (layer, linear) site; subclasses say how it acts and what is neutral."""

    slot = "linear"  # it wraps linear projections (the scope's linear handler)
    neutral: float = 0.0

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

    def mode(self, key: tuple[int, str]) -> str:
        """How the vector at `key` acts (modules that agree on it share one gathered vector there)."""
        return ""

    def act(
        self, key: tuple[int, str], x: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def route(cls, adapters: list[VectorAdapter | None]) -> LinearHandler | None:
        """The linear handler for a batch whose row i runs module i (None: none of this method)."""
        distinct = list(dict.fromkeys(a for a in adapters if a is not None))
        if not distinct:
            return None
        keys = {k for a in distinct for k in a.sites}
        if len(distinct) == 1 and all(a is distinct[0] for a in adapters):
            only, vectors = distinct[0], distinct[0].by_target

            def single(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
                v = vectors.get((layer, name))
                return None if v is None else only.act((layer, name), x, linear, v)

            return single
        stacks: dict[tuple[int, str], list[tuple[VectorAdapter, torch.Tensor]]] = {}

        def stack(key: tuple[int, str]) -> list[tuple[VectorAdapter, torch.Tensor]]:
            """Per mode at `key`: a module of that mode, and every row's vector [B, 1, D] (neutral elsewhere)."""
            groups: dict[str, VectorAdapter] = {}
            for a in distinct:
                if key in a.sites:
                    groups.setdefault(a.mode(key), a)
            out = []
            for mode, owner in groups.items():
                some = owner.vectors[owner.sites[key]]
                rows = [
                    a.vectors[a.sites[key]] if a is not None and key in a.sites and a.mode(key) == mode else None
                    for a in adapters
                ]
                gathered = some.new_full((len(rows), some.shape[0]), owner.neutral)  # neutral, then each row's
                present = [i for i, v in enumerate(rows) if v is not None]
                index = torch.tensor(present, device=some.device)
                gathered.index_copy_(0, index, torch.stack([rows[i] for i in present]))  # type: ignore[misc]
                out.append((owner, gathered.unsqueeze(1)))
            return out

        def handle(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
            key = (layer, name)
            if key not in keys:
                return None
            if key not in stacks:
                stacks[key] = stack(key)
            run = linear
            for owner, v in reversed(stacks[key]):  # the first mode outermost
                run = (lambda o, vv, inner: lambda h: o.act(key, h, inner, vv))(owner, v, run)
            return run(x)

        return handle
