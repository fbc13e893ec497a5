"""`adapter` jobs: train a single-task adapter (ST-A, or a LoRA with preset `lora`) on a registered dataset."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from sqlalchemy.orm import Session

from composer.adapter_training import train_st_adapter
from composer.heads import HeadConfig
from composer.presets import PRESETS, preset
from composer.training import TrainConfig
from registry_db.models import Job
from registry_db.repo import catalog
from service import artifact_store
from service.jobs.base import JobType, Spec, configs_valid, task_datasets
from service.jobs.context import Finish, JobContext, job_inputs, with_checkpoint_default


def known_preset(v: str) -> str:
    if v not in PRESETS:
        raise ValueError(f"unknown preset {v!r}; known: {sorted(PRESETS)}")
    return v


class BottleneckTraining(Spec):
    """Fields shared by the jobs that train bottleneck adapters."""

    base_model: str
    preset: str = "seq_bn"  # a bottleneck preset, or "lora"
    adapter: dict[str, Any] = Field(default_factory=dict)  # BottleneckConfig or LoraConfig field overrides
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return known_preset(v)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.hyperparameters)

    def check_configs(self, architecture: str, num_layers: int) -> None:
        """Build the training and adapter configs once, so their own validation refuses bad values,
        and check the adapter config against the base it will train on (LoRA targets, layers)."""
        configs_valid(
            self.train_config, lambda: preset(self.preset, **self.adapter).check_base(architecture, num_layers)
        )


class AdapterJobSpec(BottleneckTraining):
    """Train a single-task adapter (ST-A)."""

    task: str
    train_dataset: str
    validation_dataset: str | None = None
    pooling: Literal["cls", "mean"] = "mean"


def check(s: Session, owner_id: str, spec: AdapterJobSpec) -> dict[str, Any]:
    task = catalog.get_task(s, owner_id, spec.task)
    base = catalog.get_base_model(s, spec.base_model, owner_id)
    spec.check_configs(base.architecture, base.num_layers)
    task_datasets(s, owner_id, task.id, spec.train_dataset, spec.validation_dataset)
    return spec.model_copy(update={"task": task.id, "base_model": base.id}).model_dump()


def handle(ctx: JobContext, spec: AdapterJobSpec) -> Finish:
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
        row = artifact_store.register_stored(
            s,
            art,
            (weights_sha, config_sha),
            owner_id=job.owner_id,
            task_id=task.id,
            base_model_id=base_row.id,
            name=name,
            job_id=job.id,
            preset=spec.preset,
            init_seed=cfg.seed,  # the seeded initialisation it started from: merges need one start
        )
        return {"adapter_id": row.id, "version": row.version}

    result = {"metrics": run.result.best_metrics, "steps": run.result.steps, "resumed_from": ctx.resumed_from}
    return Finish(result=result, register=register)


JOB = JobType("adapter", AdapterJobSpec, check, handle)
