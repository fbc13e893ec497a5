"""Prompt-ensemble inference: one batched forward over K prompts, voting, and exact early exit."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from composer.errors import ConfigError
from composer.prompt_model import PromptModel
from composer.voting import RowVote, check_strategy, decided, vote


def predict_ensemble(
    model: PromptModel,
    names: Sequence[str],
    batch: dict[str, torch.Tensor],
    strategy: str = "majority",
    scores: Sequence[float | None] | None = None,
    early_exit: bool = False,
) -> list[RowVote]:
    """Votes per input. With `early_exit` (majority only) prompts run in order of validation score:
    first the top ⌊K/2⌋+1 on every row, then the rest only on rows not yet decided. The labels
    are identical to running all K prompts."""
    names = list(names)
    k = len(names)
    model.check_batchable(names)
    scores_l = list(scores) if scores is not None else [None] * k
    check_strategy(strategy, scores_l)
    if early_exit and strategy != "majority":
        raise ConfigError("early exit is exact only for majority voting")
    with torch.no_grad():
        if not early_exit or k < 3:
            return vote(model.logits(names, batch), strategy, scores_l)
        order = sorted(range(k), key=lambda j: -(scores_l[j] if scores_l[j] is not None else float("-inf")))
        m = k // 2 + 1
        first = model.logits([names[j] for j in order[:m]], batch)  # [B, m, C]
        b, _, c = first.shape
        logits = torch.zeros(b, k, c, dtype=first.dtype)
        evaluated = torch.zeros(b, k, dtype=torch.bool)
        logits[:, order[:m]] = first.cpu()
        evaluated[:, order[:m]] = True
        done = decided(first.argmax(-1).cpu(), c, remaining=k - m)
        todo = (~done).nonzero().flatten()
        if len(todo):
            sub = {key: v[todo.to(v.device)] for key, v in batch.items()}
            rest = model.logits([names[j] for j in order[m:]], sub).cpu()
            for col, j in enumerate(order[m:]):
                logits[todo, j] = rest[:, col]
            evaluated[todo.unsqueeze(1), torch.tensor(order[m:]).unsqueeze(0)] = True
        out = vote(logits, strategy, scores_l, evaluated)
        for i, row in enumerate(out):
            row.early_exit = bool(done[i])
        return out
