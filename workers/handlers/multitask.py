"""`multitask` jobs: train an MT-A set (one adapter and head per task, jointly) and register it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from composer.adapters.config import preset
from composer.adapters.multitask import TaskData, train_multitask
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from workers import artifact_store
from workers.catalog import load_dataset_examples, load_registered_base, task_spec
from workers.handlers.adapter import with_checkpoint_default
from workers.runner import Finish, JobContext
from workers.specs import MultitaskJobSpec


def handle(ctx: JobContext) -> Finish:
    spec = MultitaskJobSpec.model_validate(ctx.job.spec)
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    rows, data = [], []
    with ctx.registry.tx() as s:
        base_row = catalog.get_base_model(s, spec.base_model)
        for t in spec.tasks:
            task = catalog.get_task(s, ctx.job.owner_id, t.task)
            train_ds = catalog.get_dataset(s, t.train_dataset)
            val_ds = catalog.get_dataset(s, t.validation_dataset) if t.validation_dataset else None
            rows.append((task, train_ds, val_ds))
    for task, train_ds, val_ds in rows:
        train = load_dataset_examples(ctx.registry, train_ds, task)
        val = load_dataset_examples(ctx.registry, val_ds, task) if val_ds else []
        data.append(TaskData(task_spec(task), train, val))
    base = load_registered_base(base_row, ctx.settings.device)
    run = train_multitask(
        base, data, preset(spec.preset, **spec.adapter), cfg, alpha=spec.alpha,
        callbacks=[ctx.callback()], resume=ctx.resume,
    )  # fmt: skip
    arts = run.artifacts(data)
    stored = [artifact_store.store(ctx.registry, a) for a in arts]
    set_name = spec.name or "+".join(td.task.name for td in data)

    def register(s: Session, job: Job) -> dict:
        ids = []
        for (task, _, _), art, (w_sha, c_sha) in zip(rows, arts, stored, strict=True):
            row = adapters.register_adapter(
                s, owner_id=job.owner_id, task_id=task.id, base_model_id=base_row.id, name=f"{set_name}/{task.name}",
                blob_sha256=w_sha, config_sha256=c_sha, job_id=job.id,
                **artifact_store.registration(art, preset=spec.preset),
            )  # fmt: skip
            ids.append(row.id)
        mt_set = adapters.create_set(s, owner_id=job.owner_id, kind="mt_a", name=f"{set_name}#{job.id}",
                                     adapter_ids=ids, job_id=job.id)  # fmt: skip
        return {"adapter_ids": ids, "set_id": mt_set.id}

    return Finish(result={"metrics": run.result.best_metrics, "steps": run.result.steps}, register=register)
