"""`multitask` jobs: MT-As and the base trained jointly, registered as a derived base with its adapters."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from sqlalchemy.orm import Session

from composer.bottleneck.multitask import TaskData, train_multitask
from composer.presets import PRESETS, preset
from composer.safetensors_io import tensors_to_bytes
from registry_db.errors import InvalidInput
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from service import artifact_store
from service.catalog import load_dataset_examples, task_spec
from service.jobs.adapter import BottleneckTraining
from service.jobs.base import JobType, Spec, dataset_of_task
from service.jobs.context import Finish, JobContext, with_checkpoint_default


class TaskDataSpec(Spec):
    task: str
    train_dataset: str
    validation_dataset: str | None = None


class MultitaskJobSpec(BottleneckTraining):
    """Train MT-As (AdapterFusion §2.2): N >= 2 task adapters and the base fine-tuned jointly, registered as
    a derived base model with the N adapters bound to it."""

    tasks: list[TaskDataSpec] = Field(min_length=2)
    alpha: float | None = Field(None, ge=0, le=1)  # tasks sampled ∝ size^alpha (default 0.5) ...
    temperature: float | None = Field(None, ge=1)  # ... or ∝ size^(1/temperature); give one of the two
    base_learning_rate: float = Field(2e-5, gt=0, le=1e-2)  # the base's own learning rate

    @model_validator(mode="after")
    def _one_sampling(self) -> MultitaskJobSpec:
        if self.alpha is not None and self.temperature is not None:
            raise ValueError("give alpha or temperature for the task sampling, not both")
        return self

    def sampling_alpha(self) -> float:
        return 1.0 / self.temperature if self.temperature is not None else (0.5 if self.alpha is None else self.alpha)

    @field_validator("preset")
    @classmethod
    def _fusable(cls, v: str) -> str:
        if v in PRESETS and not preset(v).fusable:
            raise ValueError(f"multi-task adapters are fused, and {v!r} adapters cannot be; choose a bottleneck preset")
        return v


def check(s: Session, owner_id: str, spec: MultitaskJobSpec) -> dict[str, Any]:
    base = catalog.get_base_model(s, spec.base_model, owner_id)
    spec.check_configs(base.architecture, base.num_layers, base.hidden_size)
    items = []
    for t in spec.tasks:
        task = catalog.get_task(s, owner_id, t.task)
        dataset_of_task(s, owner_id, t.train_dataset, task.id, "train")
        if t.validation_dataset:
            dataset_of_task(s, owner_id, t.validation_dataset, task.id, "validation")
        items.append(t.model_copy(update={"task": task.id}))
    if len({t.task for t in items}) != len(items):
        raise InvalidInput("each task appears once in a multi-task job")
    return spec.model_copy(update={"tasks": items, "base_model": base.id}).model_dump()


def handle(ctx: JobContext, spec: MultitaskJobSpec) -> Finish:
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
        for (task, _, _), art, shas in zip(rows, arts, stored, strict=True):
            row = artifact_store.register_stored(
                s,
                art,
                shas,
                owner_id=job.owner_id,
                task_id=task.id,
                base_model_id=derived_row.id,
                name=f"{set_name}/{task.name}",
                job_id=job.id,
                preset=spec.preset,
                init_seed=cfg.seed,
            )
            ids.append(row.id)
        mt_set = adapters.create_set(
            s, owner_id=job.owner_id, kind="mt_a", name=f"{set_name}#{job.id}", adapter_ids=ids, job_id=job.id
        )
        return {"adapter_ids": ids, "set_id": mt_set.id, "base_model_id": derived_row.id}

    result = {"metrics": run.result.best_metrics, "selection": run.selection, "steps": run.result.steps}
    return Finish(result=result, register=register)


JOB = JobType("multitask", MultitaskJobSpec, check, handle)
