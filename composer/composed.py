"""Serving a composition tree (`Stack`, `Average`) over loaded adapters: one forward under the tree, and
every row through the head of one member (the tree's named head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from composer.composition import Average, BatchSplit, Parallel, Stack, check_tree, fusions, leaves
from composer.data import Example
from composer.errors import ConfigError
from composer.replication import above, replicated_from, shared_depth
from composer.rows import rows_through_heads
from composer.serving import Resident, RowOutput, Runtime


def parallel_hidden(encoder: Any, batch: dict[str, torch.Tensor], parallel: Parallel) -> list[torch.Tensor]:
    """The last hidden states of the batch under each branch, in one forward over the batch replicated.

    The lower layers that no branch's adapters change (AdapterDrop's `leave_out`) run once over the B
    rows; the batch is replicated where the first adapted layer begins (`composer.replication`)."""
    n, b = len(parallel.branches), batch["input_ids"].shape[0]
    check_tree(parallel)
    rows = BatchSplit(tuple(branch for branch in parallel.branches for _ in range(b)))
    names = list(dict.fromkeys(leaf for branch in parallel.branches for leaf in leaves(branch)))
    fused = list(dict.fromkeys(f for branch in parallel.branches for f in fusions(branch)))
    missing = [m for m in names if m not in encoder.adapters] + [f for f in fused if f not in encoder.fusions]
    if missing:
        raise ConfigError(f"unknown modules {missing}")
    names += [m for f in fused for m in encoder.fusions[f].members]  # a fusion's layers are its members
    num_layers = encoder.base.num_layers
    depth = min(shared_depth([encoder.adapters[m] for m in names], num_layers), num_layers - 1)
    if depth == 0:
        replicated = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in batch.items()}
        return list(encoder(**replicated, composition=rows).hidden.split(b, dim=0))
    scope = above(encoder.scope(rows), depth)
    with replicated_from(encoder.encoder, encoder.base.family, depth, b, n):
        hidden = encoder.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), scope)
    return list(hidden.split(b, dim=0))


def _check_heads(runtime: Runtime, heads: Sequence[tuple[str, Any]]) -> None:
    """Each head must belong to the subtree it serves, and have a head module to predict through."""
    for head, within in heads:
        named = leaves(within) + fusions(within)
        if head not in named:
            raise ConfigError(f"the head {head!r} is not a member of {named}")
        if not runtime.serves(head):
            raise ConfigError(f"adapter {head} has no head to predict through; name a member that has one")


def _limit(runtime: Runtime, tree: Any) -> int:
    """Where a tree's inputs are truncated: at its shortest member's length."""
    return min(runtime.max_length(m) for m in dict.fromkeys(leaves(tree) + fusions(tree)))


def _batch(runtime: Runtime, res: Resident, tree: Any, heads: Sequence[tuple[str, Any]], inputs: Sequence[Example]):  # type: ignore[no-untyped-def]
    """Check each (head, the subtree it must belong to), and tokenise at the shortest member's length."""
    _check_heads(runtime, heads)
    return runtime.tokenize(res, inputs, [_limit(runtime, tree)] * len(inputs))


def predict_tree(
    runtime: Runtime, res: Resident, tree: Stack | Average, head: str, inputs: Sequence[Example]
) -> list[RowOutput]:
    """Rows under `tree`, whose leaves are module ids leased in `runtime` (and `head` among them)."""
    batch = _batch(runtime, res, tree, [(head, tree)], inputs)
    with torch.no_grad():
        hidden = res.encoder(**batch, composition=tree).hidden
        logits = rows_through_heads([head] * len(inputs), hidden, batch["attention_mask"], res.encoder.heads)
    return [RowOutput(row) for row in logits]


def predict_parallel(
    runtime: Runtime, res: Resident, parallel: Parallel, heads: Sequence[str], inputs: Sequence[Example]
) -> list[list[RowOutput]]:
    """Per branch, its rows through its head (`heads[i]`, a member of branch i), in one replicated forward."""
    batch = _batch(runtime, res, parallel, list(zip(heads, parallel.branches, strict=True)), inputs)
    with torch.no_grad():
        hidden = parallel_hidden(res.encoder, batch, parallel)
        mask = batch["attention_mask"]
        per_branch = [
            rows_through_heads([h] * len(inputs), hs, mask, res.encoder.heads)
            for h, hs in zip(heads, hidden, strict=True)
        ]
    return [[RowOutput(row) for row in rows] for rows in per_branch]


def predict_rows(
    runtime: Runtime, res: Resident, trees: Sequence[Stack | Average], heads: Sequence[str], inputs: Sequence[Example]
) -> list[RowOutput]:
    """Row i under `trees[i]` through `heads[i]`, all rows in one forward (`BatchSplit` of trees), each
    truncated where its own tree's members are."""
    _check_heads(runtime, list(zip(heads, trees, strict=True)))
    batch = runtime.tokenize(res, inputs, [_limit(runtime, t) for t in trees])
    with torch.no_grad():
        hidden = res.encoder(**batch, composition=BatchSplit(tuple(trees))).hidden
        logits = rows_through_heads(list(heads), hidden, batch["attention_mask"], res.encoder.heads)
    return [RowOutput(row) for row in logits]
