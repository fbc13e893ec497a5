"""Serving a composition tree (`Stack`, `Average`) over loaded adapters: one forward under the tree, and
every row through the head of one member (the tree's named head)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from composer.adapter_face import rows_through_heads
from composer.composition import Average, Stack, leaves
from composer.data import Example
from composer.errors import ConfigError
from composer.serving import Resident, RowOutput, Runtime


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
