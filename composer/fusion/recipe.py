"""The fusion recipe, one call: warm start from the target task's own member, a learning-rate grid when
no rate is given (chosen on validation), the comparison with the members that answer the task alone,
the attention report, and pruning to the members above a threshold. It returns the artifact to store
and a report; the job around it only loads inputs and registers what comes back."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact
from composer.adapter_training import predict_logits, score
from composer.base import LoadedBase
from composer.composition import Fuse, Single
from composer.data import Collator, Example, TaskSpec
from composer.encoder import AdaptedEncoder
from composer.errors import ComposerError
from composer.fusion.artifacts import FusionArtifact
from composer.fusion.modules import FusionConfig
from composer.fusion.training import FusionRun, attention_report, prune_members, pruned, train_fusion
from composer.heads import HeadConfig
from composer.training import Callback, TrainConfig

# a fusion request without a learning rate, with validation data, tries each and keeps the best on validation
LR_GRID = (1e-3, 3e-4, 1e-4)


@dataclass
class FusionRequest:
    """What a fusion is asked to be: its members (ids and artifacts, in order) and how to train it."""

    member_ids: list[str]
    members: list[AdapterArtifact]
    own: list[int]  # members that are the target task's own adapters (with a head): they answer alone
    own_scores: list[float]  # their registered score on the task's metric, to pick the warm start
    fusion: FusionConfig
    train: TrainConfig
    head: HeadConfig
    warm_start: bool = True
    learning_rate_given: bool = True  # False: try LR_GRID when there is validation data
    require_improvement: bool = False
    prune_threshold: float | None = None


@dataclass
class FusionOutcome:
    artifact: FusionArtifact
    report: dict[str, Any]  # the job's result: metrics, steps, trials, comparison, attention, pruning
    pruned_members: list[str] | None = None  # a derived fusion over these members, when pruning kept >= 2
    pruned_metrics: dict[str, float] = field(default_factory=dict)


class _NoCheckpoint(Callback):
    """Progress, metric events and cancel, without checkpoints: grid trials are short, and a checkpoint of
    one trial must never resume another (a restarted job runs the grid again)."""

    def __init__(self, inner: Callback):
        self.inner = inner

    def on_start(self, total_steps: int, resumed_at: int) -> None:
        self.inner.on_start(total_steps, resumed_at)

    def on_step(self, step: int, total: int, epoch: int, loss: float, lr: float) -> None:
        self.inner.on_step(step, total, epoch, loss, lr)

    def on_evaluate(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.inner.on_evaluate(step, epoch, metrics)

    def should_cancel(self) -> bool:
        return self.inner.should_cancel()


def _timed_score(model, name, task, examples, collate):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    metrics = score(task, predict_logits(model, name, examples, collate, composition=Fuse(name)), examples)
    return metrics, time.perf_counter() - t


def comparison(base, task, validation, max_length, req: FusionRequest, run: FusionRun) -> dict:  # type: ignore[no-untyped-def]
    """Validation scores of the members that can answer the task alone (the target's own adapters, with
    its head), of the best of them, and of the fusion; which evaluation the fusion is."""
    collate = Collator(base.tokenizer, task, max_length)
    scores: dict[str, float | None] = dict.fromkeys(req.member_ids)
    for i in req.own:
        model = AdaptedEncoder(base).eval()
        name = artifacts.attach(model, req.members[i], name=f"alone{i}")
        logits = predict_logits(model, name, validation, collate, composition=Single(name))
        scores[req.member_ids[i]] = score(task, logits, validation)[task.metric]
    scored = {k: v for k, v in scores.items() if v is not None}
    best = max(scored, key=scored.__getitem__) if scored else None
    return {
        "metric": task.metric,
        "members": scores,  # None: another task's adapter, which cannot answer this task alone
        "best_member": {"id": best, "score": scored[best]} if best else None,
        "fusion": run.result.best_metrics.get(task.metric),
        "winner": run.winner,
    }


def _grid(base, task, train, validation, req, start, callback, event) -> tuple[FusionRun, list[dict]]:  # type: ignore[no-untyped-def]
    """One fusion per learning rate in LR_GRID, each from the same start; keeps the best on validation.
    Each trial's rate, score, winning epoch and cost go to `event("lr_trial", …)`."""
    best, trials = None, []
    for lr in LR_GRID:
        t0 = time.perf_counter()
        trial_cfg = TrainConfig.from_dict({**req.train.to_dict(), "learning_rate": lr})
        callbacks = [_NoCheckpoint(callback)] if callback else []
        run = train_fusion(
            base, task, train, validation, req.members, req.fusion, trial_cfg, req.head, callbacks, start=start
        )
        run.learning_rate = lr
        trial = {
            "learning_rate": lr,
            task.metric: run.result.best_metrics.get(task.metric),
            "winner": run.winner,
            "seconds": round(time.perf_counter() - t0, 1),
            "steps": run.result.steps,
        }
        trials.append(trial)
        event("lr_trial", trial)
        if best is None or trial[task.metric] > best.result.best_metrics.get(task.metric):
            best = run
    return best, trials  # type: ignore[return-value]


def fuse(
    base: LoadedBase,
    task: TaskSpec,
    train: Sequence[Example],
    validation: Sequence[Example],
    req: FusionRequest,
    callback: Callback | None = None,
    resume: bytes | None = None,
    event: Callable[[str, dict[str, Any]], None] = lambda type_, payload: None,
) -> FusionOutcome:
    """Train the fusion `req` asks for and report on it (see the module's docstring)."""
    start = max(req.own, key=lambda i: req.own_scores[req.own.index(i)]) if req.own and req.warm_start else None
    trials: list[dict] = []
    if req.learning_rate_given or not validation:
        callbacks = [callback] if callback else []
        run = train_fusion(
            base, task, train, validation, req.members, req.fusion, req.train, req.head, callbacks, resume, start=start
        )
    else:
        run, trials = _grid(base, task, train, validation, req, start, callback, event)
    ids = req.member_ids
    result: dict[str, Any] = {"metrics": run.result.best_metrics, "steps": run.result.steps}
    if trials:
        result["learning_rate"], result["lr_trials"] = run.learning_rate, trials
    if validation:
        result["comparison"] = comparison(base, task, validation, req.train.max_length, req, run)
        if run.significance is not None:
            result["significance"] = run.significance
        if req.require_improvement and start is not None and run.result.best_step == 0:
            raise ComposerError(
                f"the fusion did not improve on its start, adapter {ids[start]} "
                f"({task.metric} {result['comparison']['fusion']:.4f} on validation; {run.winner}); "
                "nothing was registered"
            )
    report_on = validation or train
    collate = Collator(base.tokenizer, task, req.train.max_length)
    report = attention_report(run.model, run.name, report_on, collate)
    result["mean_attention"] = dict(zip(ids, report["mean_attention"], strict=True))  # type: ignore[call-overload]
    result["attention_per_layer"] = {"members": ids, "layers": report["per_layer"]}
    outcome = FusionOutcome(artifact=run.artifact(ids, task), report=result)
    if req.prune_threshold is not None:
        keep = prune_members(report, req.prune_threshold)
        if len(keep) >= 2:
            full_metrics, full_s = _timed_score(run.model, run.name, task, report_on, collate)
            derived = pruned(run.model, run.name, keep)
            p_metrics, p_s = _timed_score(run.model, derived, task, report_on, collate)
            outcome.pruned_members = [ids[report["members"].index(k)] for k in keep]  # type: ignore[union-attr]
            outcome.pruned_metrics = p_metrics
            result["pruned"] = {
                "members": outcome.pruned_members,
                "metrics": p_metrics,
                "full_metrics": full_metrics,
                "relative_cost": round(p_s / full_s, 3),
            }
        else:
            result["pruned"] = {"members": [], "note": "fewer than 2 adapters above the threshold; nothing derived"}
    art = outcome.artifact
    for key in ("mean_attention", "attention_per_layer", "comparison"):
        if key in result:
            art.metrics[key] = result[key]
    return outcome
