"""Run the lower layers of a batch once and replicate it above them (AdapterDrop's shared layers).

A `Parallel` whose branches all leave out the first k layers computes the same hidden states for every
branch up to layer k: those layers run once over the batch of B rows, and the batch is replicated n
times where layer k begins. Pre-hooks on layers k… replicate every tensor argument of B rows (the hidden
states at layer k, the attention mask at every layer); the scope sees the bare base below layer k. The
hooks live for one forward and are always removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from composer.injection import FAMILIES, Scope


def layers_of(model: nn.Module, family: str) -> nn.ModuleList:
    return model.get_submodule(FAMILIES[family].layers_path)  # type: ignore[return-value]


def adapted_layers(module: Any) -> frozenset[int] | None:
    """The layers a module changes (None: unknown, or below the first layer, as a prompt's embeddings)."""
    layers = getattr(module, "layers", None)
    return frozenset(layers()) if callable(layers) else None


def shared_depth(modules: list[Any], num_layers: int) -> int:
    """How many lower layers none of `modules` changes: the depth a Parallel over them shares."""
    depth = num_layers
    for module in modules:
        layers = adapted_layers(module)
        if layers is None:
            return 0
        depth = min(depth, min(layers, default=num_layers))
    return depth


def above(scope: Scope, depth: int) -> Scope:
    """`scope` from layer `depth` up; below it, the bare base (no site handler, no linear update)."""
    handler, linear = scope.handler, scope.linear
    site = None
    if handler is not None:

        def site(layer, placement, x, r, ln):  # type: ignore[no-untyped-def]
            return ln(x + r) if layer < depth else handler(layer, placement, x, r, ln)

    lin = None
    if linear is not None:

        def lin(layer, name, x, plain):  # type: ignore[no-untyped-def]
            return None if layer < depth else linear(layer, name, x, plain)

    return Scope(handler=site, capture=scope.capture, prefix=scope.prefix, linear=lin)


def _repeat(value: Any, rows: int, n: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
        return value.repeat(n, *([1] * (value.dim() - 1)))
    return value


@contextmanager
def replicated_from(model: nn.Module, family: str, depth: int, rows: int, n: int) -> Iterator[None]:
    """During the block, layers `depth`… see every B-row tensor argument replicated n times."""
    if n < 2:
        yield
        return

    def hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(_repeat(a, rows, n) for a in args), {k: _repeat(v, rows, n) for k, v in kwargs.items()}

    # prepended: the family's own pre-hooks (DistilBERT keeps the block input as a residual) see the replicas
    layers = layers_of(model, family)[depth:]
    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True, prepend=True) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
