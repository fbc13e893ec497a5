"""Stack and Average over bottleneck adapters at one site, as adapters 1.3.0 composes them.

A site's state is (hidden, adapter residual, the last adapter that ran). Inside a `Stack` each adapter
first runs its own `pre` on the hidden state it is given (the previous member's output, beside the
sublayer's residual input `r`), then its bottleneck and residual (`finish`); a nested block takes the
state as it is. An `Average` runs its first member's `pre` once, every child on that same state, and
mixes their outputs with its weights. The last adapter that ran applies its `post` (the original
LayerNorm, a parallel adapter's add) once, at the end.

One difference from adapters 1.3.0, on purpose: its `Average` takes the *mean* of the weighted outputs,
`mean(stack(h_i) * w_i)`, which divides the average by the number of members (Average(a, a) is not a);
here it is the weighted sum `Σ w_i h_i` (scripts/parity/make_compositions.py keeps both). A block none of
whose members has a layer at a site is skipped there, where adapters 1.3.0 fails with a KeyError (a
Stack's Fuse too: adapters 1.3.0 fails where another member of the Stack has a site the fusion lacks).

A `Fuse` inside a Stack runs as adapters 1.3.0's `compose_fuse`: its last member's `pre` on the state it is
given, every member on that, the fusion's attention over their outputs, plus the adapter residual; the
fusion's last member is then the layer that ran last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from composer.composition import Average, Fuse, Stack, fusions, leaves
from composer.injection import Placement

LayerNorm = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _State:
    hidden: torch.Tensor
    residual: torch.Tensor
    last: Any = None  # the bottleneck layer that ran last


def _present(node: Any, sites: Mapping[str, Any]) -> bool:
    return any(sites.get(leaf) is not None for leaf in leaves(node)) or any(
        sites.get(Fuse(f)) is not None for f in fusions(node)
    )


def _single(site: Any, st: _State) -> _State:
    return _State(site.finish(site.delta(st.hidden), st.residual), st.residual, site)


def _run(node: Any, st: _State, sites: Mapping[str, Any], r: torch.Tensor, ln: LayerNorm) -> _State:
    if isinstance(node, str):  # a member of a Stack, or the whole composition: its own pre, then itself
        site = sites.get(node)
        if site is None:
            return st
        h, res = site.pre(st.hidden, r, ln)
        return _single(site, _State(h, res, st.last))
    if isinstance(node, Fuse):  # a fusion's site step: its last member's pre, the attention, the residual
        step = sites.get(node)
        if step is None:
            return st
        hidden, res, last = step(st.hidden, r, ln)
        return _State(hidden, res, last)
    if not _present(node, sites):
        return st
    if isinstance(node, Stack):
        for child in node.children:
            st = _run(child, st, sites, r, ln)
        return st
    if isinstance(node, Average):
        first = sites.get(leaves(node)[0])
        if first is not None:
            h, res = first.pre(st.hidden, r, ln)
            st = _State(h, res, st.last)
        outs, weights = [], []
        for child, w in zip(node.children, node.normalised_weights(), strict=True):
            if isinstance(child, str):
                if sites.get(child) is None:
                    continue
                outs.append(_single(sites[child], st))
            elif _present(child, sites):
                outs.append(_run(child, st, sites, r, ln))
            else:
                continue
            weights.append(w)
        hidden = sum(w * o.hidden for w, o in zip(weights, outs, strict=True))
        return _State(hidden, st.residual, outs[-1].last)  # type: ignore[arg-type]
    raise TypeError(f"a bottleneck site cannot run {type(node).__name__}")


def batch_split(
    rows: Sequence[Any], adapters: Mapping[str, Any], fused: Mapping[str, Any] | None = None
) -> Callable[..., torch.Tensor]:
    """Each row its own composition (an adapter name, a tree, or None: the bare base), in one forward: at
    every site each group of rows with the same composition runs it on its own rows, exactly as alone."""
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row, []).append(i)

    def bare(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        return ln(x + r)

    def handler_of(node: Any) -> Callable[..., torch.Tensor]:
        if node is None:
            return bare
        if isinstance(node, str):
            return tree(Stack(node), {node: adapters[node]})  # one adapter: its pre, itself, its post
        return tree(node, {leaf: adapters[leaf] for leaf in leaves(node)}, fused)

    plan = [(handler_of(node), torch.tensor(idx)) for node, idx in groups.items()]

    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        if len(plan) == 1:
            return plan[0][0](layer, placement, x, r, ln)
        out = torch.empty_like(x)
        for handler, idx in plan:
            idx = idx.to(x.device)
            out.index_copy_(0, idx, handler(layer, placement, x.index_select(0, idx), r.index_select(0, idx), ln))
        return out

    return handle


def tree(
    node: Stack | Average, adapters: Mapping[str, Any], fused: Mapping[str, Any] | None = None
) -> Callable[..., torch.Tensor]:
    """The site handler of a Stack/Average tree whose leaves name these bottleneck adapters; `fused` maps the
    name of each fusion the tree runs to its plan, whose `step(layer, placement)` runs it at one site."""
    plans = {Fuse(f): (fused or {})[f] for f in dict.fromkeys(fusions(node))}

    def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: LayerNorm) -> torch.Tensor:
        sites: dict[Any, Any] = {name: a.site(layer, placement) for name, a in adapters.items()}
        sites.update({key: plan.step(layer, placement) for key, plan in plans.items()})
        if all(s is None for s in sites.values()):
            return ln(x + r)
        st = _run(node, _State(x, r), sites, r, ln)
        return st.last.post(st.hidden, x, r, ln)

    return handle
