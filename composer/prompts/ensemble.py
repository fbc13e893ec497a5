"""Prompt ensembles: K prompts' logits from one batched forward, voting, and exact early exit.

Voting strategies:
- `majority`: one vote per prompt; ties are broken by the mean probability (and reported);
- `weighted`: votes weighted by each prompt's validation score, normalised;
- `mean_prob`: argmax of the mean of the K probability vectors;
- `mean_logit`: argmax of the mean of the K logit vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from composer.errors import ConfigError
from composer.prompts.model import PromptModel

# an ensemble's voting rule: the one name it has where it is stored, requested and used
Voting = Literal["majority", "weighted", "mean_prob", "mean_logit"]
VOTING_RULES: tuple[str, ...] = get_args(Voting)


@dataclass
class RowVote:
    label: int
    agreement: float  # share of the evaluated prompts that voted for the label
    counts: list[float]  # votes per label (weighted votes for `weighted`)
    per_prompt: list[tuple[int, float] | None]  # (label, probability of that label); None = skipped
    early_exit: bool = False
    tie_break: bool = False
    extra: dict[str, float] = field(default_factory=dict)


def check_voting(voting: str, scores: list[float | None] | None) -> None:
    if voting not in VOTING_RULES:
        raise ConfigError(f"unknown voting rule {voting!r}; use one of {list(VOTING_RULES)}")
    if voting == "weighted" and (not scores or any(s is None for s in scores)):
        raise ConfigError("weighted voting needs a validation score for every prompt")


def vote(
    logits: torch.Tensor,
    voting: str = "majority",
    scores: list[float | None] | None = None,
    evaluated: torch.Tensor | None = None,
) -> list[RowVote]:
    """logits [B, K, C]; `evaluated` [B, K] bool marks prompts that ran for each row (default: all)."""
    check_voting(voting, scores)  # the one check of a request's rule (the API's schema names the rules)
    logits = logits.float().cpu()  # votes are a little CPU work, whatever device the prompts ran on
    evaluated = evaluated.cpu() if evaluated is not None else None
    b, k, c = logits.shape
    ev = evaluated if evaluated is not None else torch.ones(b, k, dtype=torch.bool)
    probs = torch.softmax(logits.float(), dim=-1)
    votes = probs.argmax(-1)  # [B, K]
    out = []
    for i in range(b):
        idx = ev[i].nonzero().flatten()
        p, v, lg = probs[i, idx], votes[i, idx], logits[i, idx].float()
        mean_p = p.mean(0)
        per = [None] * k
        for j, kk in enumerate(idx.tolist()):
            per[kk] = (int(v[j]), float(p[j, v[j]]))
        tie = False
        if voting in ("majority", "weighted"):
            w = torch.ones(len(idx)) if voting == "majority" else torch.tensor([float(scores[j]) for j in idx.tolist()])  # type: ignore[index,arg-type]
            w = w / w.sum() * len(idx) if voting == "weighted" else w
            counts = torch.zeros(c).index_add_(0, v, w)
            top = counts.max()
            tied = (counts == top).nonzero().flatten()
            tie = len(tied) > 1
            label = int(tied[mean_p[tied].argmax()]) if tie else int(tied[0])
        elif voting == "mean_prob":
            counts, label = torch.bincount(v, minlength=c).float(), int(mean_p.argmax())
        else:
            counts, label = torch.bincount(v, minlength=c).float(), int(lg.mean(0).argmax())
        agreement = float((v == label).float().mean())
        out.append(RowVote(label, agreement, [float(x) for x in counts], per, tie_break=tie))
    return out


def decided(votes: torch.Tensor, num_labels: int, remaining: int) -> torch.Tensor:
    """[B] bool: rows whose majority cannot change, however the `remaining` prompts vote.

    A row is decided when its leading label's count exceeds the runner-up's count plus the
    number of prompts not yet run: no remaining vote, and no tie-break, can change it."""
    counts = torch.nn.functional.one_hot(votes, num_labels).sum(1)  # [B, C]
    top2 = counts.topk(min(2, num_labels), dim=-1).values
    runner = top2[:, 1] if num_labels > 1 else torch.zeros_like(top2[:, 0])
    return top2[:, 0] > runner + remaining


def predict_ensemble(
    model: PromptModel,
    names: Sequence[str],
    batch: dict[str, torch.Tensor],
    voting: str = "majority",
    scores: Sequence[float | None] | None = None,
    early_exit: bool = False,
    plan: str = "batched",
) -> list[RowVote]:
    """Votes per input. With `early_exit` (majority only) prompts run in order of validation score:
    first the top ⌊K/2⌋+1 on every row, then the rest only on rows not yet decided. The labels
    are identical to running all K prompts. `plan` is how the forwards run (`PromptModel.logits`)."""
    names = list(names)
    k = len(names)
    model.check_batchable(names)
    scores_l = list(scores) if scores is not None else [None] * k
    if early_exit and voting != "majority":
        raise ConfigError("early exit is exact only for majority voting")
    with torch.no_grad():
        if not early_exit or k < 3:
            return vote(model.logits(names, batch, plan), voting, scores_l)
        order = sorted(range(k), key=lambda j: -(scores_l[j] if scores_l[j] is not None else float("-inf")))
        m = k // 2 + 1
        first = model.logits([names[j] for j in order[:m]], batch, plan)  # [B, m, C]
        b, _, c = first.shape
        logits = torch.zeros(b, k, c, dtype=first.dtype)
        evaluated = torch.zeros(b, k, dtype=torch.bool)
        logits[:, order[:m]] = first.cpu()
        evaluated[:, order[:m]] = True
        done = decided(first.argmax(-1).cpu(), c, remaining=k - m)
        todo = (~done).nonzero().flatten()
        if len(todo):
            sub = {key: v[todo.to(v.device)] for key, v in batch.items()}
            rest = model.logits([names[j] for j in order[m:]], sub, plan).cpu()
            for col, j in enumerate(order[m:]):
                logits[todo, j] = rest[:, col]
            evaluated[todo.unsqueeze(1), torch.tensor(order[m:]).unsqueeze(0)] = True
        out = vote(logits, voting, scores_l, evaluated)
        for i, row in enumerate(out):
            row.early_exit = bool(done[i])
        return out
