"""`adapter` jobs: train a single-task adapter (ST-A) on a registered dataset."""

from __future__ import annotations

import torch
from sqlalchemy.orm import Session

from composer.base import load_base
from composer.config import preset
from composer.errors import IncompatibleBaseError
from composer.heads import HeadConfig
from composer.st_adapter import train_st_adapter
from composer.training import TrainConfig
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from workers import artifact_store
from workers.catalog import load_dataset_examples, task_spec
from workers.devices import pick_device
from workers.runner import Finish, JobContext
from workers.specs import AdapterJobSpec


def load_registered_base(row, device: str):  # type: ignore[no-untyped-def]
    base = load_base(row.path, name=row.name, num_hidden_layers=row.num_layers, device=device)
    if base.identity.fingerprint != row.identity:
        raise IncompatibleBaseError(
            f"the model at {row.path} no longer matches base model {row.name!r} as registered "
            f"({base.identity.fingerprint[:12]} != {row.identity[:12]})"
        )
    return base


def with_checkpoint_default(cfg: TrainConfig, ctx: JobContext) -> TrainConfig:
    """Jobs checkpoint every COMPOSER_CHECKPOINT_EVERY_STEPS unless their hyperparameters say otherwise."""
    if ctx.settings.checkpoint_every_steps and not cfg.checkpoint_every_steps:
        return TrainConfig.from_dict({**cfg.to_dict(), "checkpoint_every_steps": ctx.settings.checkpoint_every_steps})
    return cfg


def handle(ctx: JobContext) -> Finish:
    spec = AdapterJobSpec.model_validate(ctx.job.spec)
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    with ctx.registry.tx() as s:
        task = catalog.get_task(s, ctx.job.owner_id, spec.task)
        base_row = catalog.get_base_model(s, spec.base_model)
        train_ds = catalog.get_dataset(s, spec.train_dataset)
        val_ds = catalog.get_dataset(s, spec.validation_dataset) if spec.validation_dataset else None
    tspec = task_spec(task)
    train = load_dataset_examples(ctx.registry, train_ds, task)
    validation = load_dataset_examples(ctx.registry, val_ds, task) if val_ds else []
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = load_registered_base(base_row, pick_device(ctx.settings.device))
    head = HeadConfig(kind=tspec.kind, num_labels=tspec.num_labels, pooling=spec.pooling)
    name = spec.name or task.name
    run = train_st_adapter(
        base, tspec, train, validation, preset(spec.preset, **spec.adapter), cfg, head,
        callbacks=[ctx.callback()], resume=ctx.resume, name=name,
    )  # fmt: skip
    art = run.artifact(tspec)
    weights_sha, config_sha = artifact_store.store(ctx.registry, art)

    def register(s: Session, job: Job) -> dict:
        row = adapters.register_adapter(
            s, owner_id=job.owner_id, task_id=task.id, base_model_id=base_row.id, kind="st_a", name=name,
            method_config={"method": "bottleneck", "preset": spec.preset, "config": art.config.to_dict()},
            hidden_size=art.hidden_size, blob_sha256=weights_sha, config_sha256=config_sha,
            param_count=artifact_store.param_count(art), metrics=art.metrics, job_id=job.id,
        )  # fmt: skip
        return {"adapter_id": row.id, "version": row.version}

    result = {"metrics": run.result.best_metrics, "steps": run.result.steps, "resumed_from": ctx.resumed_from}
    return Finish(result=result, register=register)


__all__ = ["handle", "load_registered_base", "with_checkpoint_default"]
