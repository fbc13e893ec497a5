"""Serving a composition tree (`Stack`, `Average`) over loaded adapters: one forward under the tree, and
every row through the head of one member (the tree's named head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from composer.adapter_face import rows_through_heads
from composer.composition import Average, BatchSplit, Parallel, Stack, check_tree, leaves
from composer.data import Example
from composer.errors import ConfigError
from composer.serving import Resident, RowOutput, Runtime


def parallel_hidden(encoder: Any, batch: dict[str, torch.Tensor], parallel: Parallel) -> list[torch.Tensor]:
    """The last hidden states of the batch under each branch (one forward over the batch replicated)."""
    n, b = len(parallel.branches), batch["input_ids"].shape[0]
    check_tree(parallel)
    replicated = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in batch.items()}
    rows = tuple(branch for branch in parallel.branches for _ in range(b))
    hidden = encoder(**replicated, composition=BatchSplit(rows)).hidden
    return list(hidden.split(b, dim=0))


def predict_tree(
    runtime: Runtime, res: Resident, tree: Stack | Average, head: str, inputs: Sequence[Example]
) -> list[RowOutput]:
    """Rows under `tree`, whose leaves are module ids leased in `runtime` (and `head` among them)."""
    members = list(dict.fromkeys(leaves(tree)))
    if head not in members:
        raise ConfigError(f"the head {head!r} is not a member of the composition {members}")
    if not runtime.serves(head):
        raise ConfigError(f"adapter {head} has no head to predict through; name a member that has one")
    limit = min(runtime.max_length(m) for m in members)
    batch = runtime.tokenize(res, inputs, [limit] * len(inputs))
    with torch.no_grad():
        hidden = res.encoder(**batch, composition=tree).hidden
        logits = rows_through_heads([head] * len(inputs), hidden, batch["attention_mask"], res.encoder.heads)
    return [RowOutput(row) for row in logits]


def predict_parallel(
    runtime: Runtime, res: Resident, parallel: Parallel, heads: Sequence[str], inputs: Sequence[Example]
) -> list[list[RowOutput]]:
    """Per branch, its rows through its head (`heads[i]`, a member of branch i), in one replicated forward."""
    members = list(dict.fromkeys(leaves(parallel)))
    for branch, head in zip(parallel.branches, heads, strict=True):
        if head not in leaves(branch):
            raise ConfigError(f"the head {head!r} is not a member of its branch {leaves(branch)}")
        if not runtime.serves(head):
            raise ConfigError(f"adapter {head} has no head to predict through; name a member that has one")
    limit = min(runtime.max_length(m) for m in members)
    batch = runtime.tokenize(res, inputs, [limit] * len(inputs))
    with torch.no_grad():
        hidden = parallel_hidden(res.encoder, batch, parallel)
        mask = batch["attention_mask"]
        per_branch = [
            rows_through_heads([h] * len(inputs), hs, mask, res.encoder.heads)
            for h, hs in zip(heads, hidden, strict=True)
        ]
    return [[RowOutput(row) for row in rows] for rows in per_branch]
