"""`fusion` jobs: train AdapterFusion over registered adapters for a target task; optionally prune."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session

from composer.adapters import artifacts
from composer.adapters.fusion import FusionConfig
from composer.adapters.fusion_training import attention_report, prune_members, pruned, train_fusion
from composer.adapters.model import AdaptedEncoder
from composer.adapters.training import predict_logits, score
from composer.composition import Fuse, Single
from composer.data import Collator
from composer.errors import ComposerError
from composer.heads import HeadConfig
from composer.training import Callback, TrainConfig
from registry_db.models import Job
from registry_db.repo import adapters
from workers import artifact_store
from workers.handlers.adapter import job_inputs, with_checkpoint_default
from workers.runner import Finish, JobContext
from workers.specs import LR_GRID, FusionJobSpec


def _timed_score(model, name, fusion, task, examples, collate):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    metrics = score(task, predict_logits(model, name, examples, collate, composition=Fuse(fusion)), examples)
    return metrics, time.perf_counter() - t


def comparison(base, task, validation, max_length, arts, member_ids, own, run) -> dict:  # type: ignore[no-untyped-def]
    """Validation scores of the members that can answer the task alone (the target's own adapters, with
    its head), of the best of them, and of the fusion; which evaluation the fusion is."""
    collate = Collator(base.tokenizer, task, max_length)
    scores: dict[str, float | None] = dict.fromkeys(member_ids)
    for i in own:
        model = AdaptedEncoder(base).eval()
        name = artifacts.attach(model, arts[i], name=f"alone{i}")
        logits = predict_logits(model, name, validation, collate, composition=Single(name))
        scores[member_ids[i]] = score(task, logits, validation)[task.metric]
    scored = {k: v for k, v in scores.items() if v is not None}
    best = max(scored, key=scored.__getitem__) if scored else None
    return {
        "metric": task.metric,
        "members": scores,  # None: another task's adapter, which cannot answer this task alone
        "best_member": {"id": best, "score": scored[best]} if best else None,
        "fusion": run.result.best_metrics.get(task.metric),
        "winner": run.winner,
    }


class _NoCheckpoint(Callback):
    """The job's progress, metric events and cancel, without checkpoints: grid trials are short, and a
    checkpoint of one trial must never resume another (a restarted job runs the grid again)."""

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


def _grid(ctx, base, task, train, validation, arts, fusion_cfg, cfg, head, start, trials):  # type: ignore[no-untyped-def]
    """One fusion per learning rate in LR_GRID; keeps the one with the best validation score. Each trial's
    rate, score, winning epoch and cost go to the job's events."""
    best = None
    for lr in LR_GRID:
        t0 = time.perf_counter()
        trial_cfg = TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": lr})
        run = train_fusion(
            base,
            task,
            train,
            validation,
            arts,
            fusion_cfg,
            trial_cfg,
            head,
            callbacks=[_NoCheckpoint(ctx.callback())],
            start=start,
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
        ctx.event("lr_trial", trial)
        if best is None or trial[task.metric] > best.result.best_metrics.get(task.metric):
            best = run
    return best


def handle(ctx: JobContext) -> Finish:
    spec = FusionJobSpec.model_validate(ctx.job.spec)
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    inp = job_inputs(ctx, spec.task, spec.base_model or "", spec.train_dataset, spec.validation_dataset)
    task, tspec, base_row, base = inp.task, inp.spec, inp.base_row, inp.base
    train, validation = inp.train, inp.validation
    with ctx.registry.tx() as s:
        members = [adapters.get_adapter(s, a, ctx.job.owner_id) for a in spec.adapters]
    arts = [artifact_store.fetch(ctx.registry, m) for m in members]
    head = HeadConfig(kind=tspec.kind, num_labels=tspec.num_labels, pooling=spec.pooling)
    own = [i for i, (m, a) in enumerate(zip(members, arts, strict=True)) if m.task_id == task.id and a.head is not None]
    start = (
        max(own, key=lambda i: members[i].metrics.get(tspec.metric, float("-inf"))) if own and spec.warm_start else None
    )
    fusion_cfg = FusionConfig.from_dict(spec.fusion)
    trials: list[dict] = []
    if "learning_rate" in spec.hyperparameters or not validation:
        run = train_fusion(
            base,
            tspec,
            train,
            validation,
            arts,
            fusion_cfg,
            cfg,
            head,
            callbacks=[ctx.callback()],
            resume=ctx.resume,
            start=start,
        )
    else:  # no rate given: each grid point from the same start, chosen on validation
        run = _grid(ctx, base, tspec, train, validation, arts, fusion_cfg, cfg, head, start, trials)
    member_ids = [m.id for m in members]
    result: dict = {"metrics": run.result.best_metrics, "steps": run.result.steps}
    if trials:
        result["learning_rate"], result["lr_trials"] = run.learning_rate, trials
    if validation:
        result["comparison"] = comparison(base, tspec, validation, cfg.max_length, arts, member_ids, own, run)
        if run.significance is not None:
            result["significance"] = run.significance
        if spec.require_improvement and start is not None and run.result.best_step == 0:
            raise ComposerError(
                f"the fusion did not improve on its start, adapter {member_ids[start]} "
                f"({tspec.metric} {result['comparison']['fusion']:.4f} on validation; {run.winner}); "
                "nothing was registered"
            )
    report_on = validation or train
    collate = Collator(base.tokenizer, tspec, cfg.max_length)
    report = attention_report(run.model, run.name, report_on, collate)
    names = report["members"]
    result["mean_attention"] = dict(zip(member_ids, report["mean_attention"], strict=True))  # type: ignore[call-overload]
    result["attention_per_layer"] = {"members": member_ids, "layers": report["per_layer"]}
    pruned_ids: list[str] | None = None
    if spec.prune_threshold is not None:
        keep = prune_members(report, spec.prune_threshold)
        if len(keep) >= 2:
            full_metrics, full_s = _timed_score(run.model, run.name, run.name, tspec, report_on, collate)
            derived = pruned(run.model, run.name, keep)
            p_metrics, p_s = _timed_score(run.model, derived, derived, tspec, report_on, collate)
            pruned_ids = [member_ids[names.index(k)] for k in keep]  # type: ignore[union-attr]
            result["pruned"] = {
                "members": pruned_ids,
                "metrics": p_metrics,
                "full_metrics": full_metrics,
                "relative_cost": round(p_s / full_s, 3),
            }
        else:
            result["pruned"] = {"members": [], "note": "fewer than 2 adapters above the threshold; nothing derived"}
    art = run.artifact(member_ids, tspec)
    art.metrics["mean_attention"] = result["mean_attention"]
    art.metrics["attention_per_layer"] = result["attention_per_layer"]
    if "comparison" in result:
        art.metrics["comparison"] = result["comparison"]
    w_sha, c_sha = artifact_store.store(ctx.registry, art)
    name = spec.name or f"{task.name}-fusion"

    def register(s: Session, job: Job) -> dict:
        row = adapters.register_adapter(
            s,
            owner_id=job.owner_id,
            task_id=task.id,
            base_model_id=base_row.id,
            name=name,
            job_id=job.id,
            blob_sha256=w_sha,
            config_sha256=c_sha,
            **artifact_store.registration(art),
        )
        adapters.add_fusion_members(s, row.id, member_ids)
        out = {"adapter_id": row.id, "version": row.version}
        if pruned_ids:
            derived = artifact_store.registration(art, members=pruned_ids, derived_from=row.id)
            derived["metrics"] = result["pruned"]["metrics"]
            derived_row = adapters.register_adapter(
                s,
                owner_id=job.owner_id,
                task_id=task.id,
                base_model_id=base_row.id,
                name=f"{name}-pruned",
                blob_sha256=w_sha,
                config_sha256=c_sha,
                job_id=job.id,
                **derived,
            )
            adapters.add_fusion_members(s, derived_row.id, pruned_ids)
            out["pruned_adapter_id"] = derived_row.id
        return out

    return Finish(result=result, register=register)
