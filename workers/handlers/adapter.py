"""`adapter` jobs: train a single-task adapter (ST-A) on a registered dataset."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from composer.adapters.config import preset
from composer.adapters.training import train_st_adapter
from composer.base import LoadedBase
from composer.data import Example, TaskSpec
from composer.heads import HeadConfig
from composer.training import TrainConfig
from registry_db.models import BaseModelRow, Job, Task
from registry_db.repo import adapters, catalog
from workers import artifact_store
from workers.catalog import load_dataset_examples, task_spec
from workers.runner import Finish, JobContext
from workers.specs import AdapterJobSpec


def with_checkpoint_default(cfg: TrainConfig, ctx: JobContext) -> TrainConfig:
    """Jobs checkpoint every COMPOSER_CHECKPOINT_EVERY_STEPS unless their hyperparameters say otherwise."""
    if ctx.settings.checkpoint_every_steps and not cfg.checkpoint_every_steps:
        return TrainConfig.from_dict({**cfg.to_dict(), "checkpoint_every_steps": ctx.settings.checkpoint_every_steps})
    return cfg


@dataclass
class JobInputs:
    task: Task
    spec: TaskSpec
    base_row: BaseModelRow
    base: LoadedBase
    train: list[Example]
    validation: list[Example]


def job_inputs(ctx: JobContext, task_ref: str, base_ref: str, train_id: str, validation_id: str | None) -> JobInputs:
    """What every training job reads first: its task, datasets (verified blobs) and base model."""
    with ctx.registry.tx() as s:
        task = catalog.get_task(s, ctx.job.owner_id, task_ref)
        base_row = catalog.get_base_model(s, base_ref)
        train_ds = catalog.get_dataset(s, train_id)
        val_ds = catalog.get_dataset(s, validation_id) if validation_id else None
    train = load_dataset_examples(ctx.registry, train_ds, task)
    validation = load_dataset_examples(ctx.registry, val_ds, task) if val_ds else []
    base = ctx.load_base(base_row)
    return JobInputs(task, task_spec(task), base_row, base, train, validation)


def handle(ctx: JobContext) -> Finish:
    spec = AdapterJobSpec.model_validate(ctx.job.spec)
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    inp = job_inputs(ctx, spec.task, spec.base_model, spec.train_dataset, spec.validation_dataset)
    task, tspec, base_row, base = inp.task, inp.spec, inp.base_row, inp.base
    train, validation = inp.train, inp.validation
    head = HeadConfig(kind=tspec.kind, num_labels=tspec.num_labels, pooling=spec.pooling)
    name = spec.name or task.name
    run = train_st_adapter(
        base,
        tspec,
        train,
        validation,
        preset(spec.preset, **spec.adapter),
        cfg,
        head,
        callbacks=[ctx.callback()],
        resume=ctx.resume,
        name=name,
    )
    art = run.artifact(tspec)
    weights_sha, config_sha = artifact_store.store(ctx.registry, art)

    def register(s: Session, job: Job) -> dict:
        row = adapters.register_adapter(
            s,
            owner_id=job.owner_id,
            task_id=task.id,
            base_model_id=base_row.id,
            name=name,
            job_id=job.id,
            blob_sha256=weights_sha,
            config_sha256=config_sha,
            **artifact_store.registration(art, preset=spec.preset),
        )
        return {"adapter_id": row.id, "version": row.version}

    result = {"metrics": run.result.best_metrics, "steps": run.result.steps, "resumed_from": ctx.resumed_from}
    return Finish(result=result, register=register)


__all__ = ["JobInputs", "handle", "job_inputs", "with_checkpoint_default"]
