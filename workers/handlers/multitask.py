"""`multitask` jobs: train MT-As (N task adapters with the base fine-tuned jointly) and register the
derived base (stored once in the blob store, with lineage to its parent and the job) and the N adapters,
bound to it, as a set."""

from __future__ import annotations

from sqlalchemy.orm import Session

from composer.adapters.config import preset
from composer.adapters.multitask import TaskData, train_multitask
from composer.safetensors_io import tensors_to_bytes
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from workers import artifact_store
from workers.catalog import load_dataset_examples, task_spec
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
    base = ctx.load_base(base_row)
    run = train_multitask(
        base,
        data,
        preset(spec.preset, **spec.adapter),
        cfg,
        alpha=spec.sampling_alpha(),
        base_learning_rate=spec.base_learning_rate,
        callbacks=[ctx.callback()],
        resume=ctx.resume,
    )
    derived = run.derive_base(f"{base_row.name}+mt:{ctx.job.id}")
    weights_sha = ctx.registry.blobs.put(tensors_to_bytes(run.base_weights()))
    ctx.event("derived_base", {"identity": derived.fingerprint, "parent": base_row.id, "weights_sha256": weights_sha})
    arts = run.artifacts(data)
    stored = [artifact_store.store(ctx.registry, a) for a in arts]
    set_name = spec.name or "+".join(td.task.name for td in data)

    def register(s: Session, job: Job) -> dict:
        derived_row, _ = catalog.register_base_model(
            s,
            name=derived.name,
            identity=derived.fingerprint,
            config_hash=derived.config_hash,
            weights_hash=derived.weights_hash,
            architecture=base_row.architecture,
            hidden_size=base_row.hidden_size,
            num_layers=base_row.num_layers,
            path=base_row.path,
            parent_id=base_row.id,
            job_id=job.id,
            owner_id=job.owner_id,
            weights_sha256=weights_sha,
        )
        ids = []
        for (task, _, _), art, (w_sha, c_sha) in zip(rows, arts, stored, strict=True):
            row = adapters.register_adapter(
                s,
                owner_id=job.owner_id,
                task_id=task.id,
                base_model_id=derived_row.id,
                name=f"{set_name}/{task.name}",
                blob_sha256=w_sha,
                config_sha256=c_sha,
                job_id=job.id,
                **artifact_store.registration(art, preset=spec.preset),
            )
            ids.append(row.id)
        mt_set = adapters.create_set(
            s, owner_id=job.owner_id, kind="mt_a", name=f"{set_name}#{job.id}", adapter_ids=ids, job_id=job.id
        )
        return {"adapter_ids": ids, "set_id": mt_set.id, "base_model_id": derived_row.id}

    result = {"metrics": run.result.best_metrics, "selection": run.selection, "steps": run.result.steps}
    return Finish(result=result, register=register)
