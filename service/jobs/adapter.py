"""`adapter` jobs: train a single-task adapter (ST-A, or a LoRA with preset `lora`) on a registered dataset."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from sqlalchemy.orm import Session

from composer import kinds
from composer.adapter_artifact import split_tensors
from composer.adapter_training import train_st_adapter
from composer.heads import HeadConfig
from composer.presets import PRESETS, preset, training_defaults
from composer.training import TrainConfig
from composer.transfer.estimators import Estimator
from registry_db.errors import InvalidInput
from registry_db.models import Adapter, Job
from registry_db.repo import adapters as adapter_repo
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
    preset: str = "seq_bn"  # a bottleneck preset, or another method's ("lora", "ia3", "bitfit", ...)
    adapter: dict[str, Any] = Field(default_factory=dict)  # the preset's config field overrides
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        return known_preset(v)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**training_defaults(self.preset), **self.hyperparameters})

    def check_configs(self, architecture: str, num_layers: int, hidden_size: int | None = None) -> None:
        """Build the training and adapter configs once, so their own validation refuses bad values,
        and check the adapter config against the base it will train on (LoRA targets, layers)."""
        configs_valid(
            self.train_config,
            lambda: preset(self.preset, **self.adapter).check_base(architecture, num_layers, hidden_size),
        )


class WarmStart(Spec):
    """Start from a source adapter's weights (intermediate-task transfer), with a fresh head: a reference,
    or "auto" for the top of the task's ranking (`POST /v1/tasks/{task}/recommendations`)."""

    source: str = Field(validation_alias=AliasChoices("from", "source"), serialization_alias="from")
    estimator: Estimator = "logme"  # what ranks the sources for "auto"


class AdapterJobSpec(BottleneckTraining):
    """Train a single-task adapter (ST-A)."""

    task: str
    train_dataset: str
    validation_dataset: str | None = None
    pooling: Literal["cls", "mean"] = "mean"
    warm_start: WarmStart | None = None
    # train on a frozen quantised base: "nf4" is QLoRA's 4-bit NormalFloat (any device), "int8" the int8 base
    # (CPU); the adapter trains in fp32 and serves on either serving precision
    base_precision: Literal["fp32", "int8", "nf4"] = "fp32"


def check(s: Session, owner_id: str, spec: AdapterJobSpec) -> dict[str, Any]:
    task = catalog.get_task(s, owner_id, spec.task)
    base = catalog.get_base_model(s, spec.base_model, owner_id)
    task_datasets(s, owner_id, task.id, spec.train_dataset, spec.validation_dataset)
    update: dict[str, Any] = {"task": task.id, "base_model": base.id}
    asked = spec.preset if "preset" in spec.model_fields_set else None
    if spec.warm_start is None:
        spec.check_configs(base.architecture, base.num_layers, base.hidden_size)
    elif spec.adapter or (asked and spec.warm_start.source == "auto"):
        raise InvalidInput("a warm start takes its source's adapter config: give no preset or adapter fields")
    elif spec.warm_start.source != "auto":
        src = warm_source(s, owner_id, spec.warm_start.source, base.id, asked)
        update["warm_start"] = spec.warm_start.model_copy(update={"source": src.id})
    return spec.model_copy(update=update).model_dump(by_alias=True)


def warm_source(s: Session, owner_id: str, ref: str, base_id: str, asked_preset: str | None = None) -> Adapter:
    """The source of a warm start, checked: one the owner may read, a transfer source, ready, on this base,
    and of the preset asked for (if one is asked for)."""
    row = adapter_repo.resolve_adapter(s, owner_id, ref)
    if not kinds.get(row.kind).rankable:
        raise InvalidInput(f"adapter {row.id} is a {row.kind}; a warm start begins from an adapter (ST-A, LoRA, MT-A)")
    if row.status != "ready":
        raise InvalidInput(f"adapter {row.id} is {row.status}, not ready")
    if row.base_model_id != base_id:
        raise InvalidInput(f"adapter {row.id} was trained on base {row.base_model_id}, not {base_id}")
    source_preset = (row.method_config or {}).get("preset")
    if asked_preset and source_preset and source_preset != asked_preset:
        raise InvalidInput(f"adapter {row.id} is a {source_preset}, not the {asked_preset} asked for")
    return row


def handle(ctx: JobContext, spec: AdapterJobSpec) -> Finish:
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    inp = job_inputs(ctx, spec.task, spec.base_model, spec.train_dataset, spec.validation_dataset, spec.base_precision)
    task, tspec, base_row, base = inp.task, inp.spec, inp.base_row, inp.base
    train, validation = inp.train, inp.validation
    head = HeadConfig(kind=tspec.kind, num_labels=tspec.num_labels, pooling=spec.pooling)
    name = spec.name or task.name
    if spec.warm_start is None:
        adapter_cfg, init, lineage, preset_name = preset(spec.preset, **spec.adapter), None, None, spec.preset
    else:
        adapter_cfg, init, lineage, preset_name = warm_start_from(ctx, spec, base)
        ctx.event("warm_start", lineage)
    run = train_st_adapter(
        base,
        tspec,
        train,
        validation,
        adapter_cfg,
        cfg,
        head,
        callbacks=[ctx.callback()],
        resume=ctx.resume,
        name=name,
        init_adapter=init,
    )
    art = run.artifact(tspec)
    stored = artifact_store.store(ctx.registry, art)

    def register(s: Session, job: Job) -> dict:
        row = artifact_store.register_stored(
            s,
            art,
            stored,
            owner_id=job.owner_id,
            task_id=task.id,
            base_model_id=base_row.id,
            name=name,
            job_id=job.id,
            preset=preset_name,
            trained_on_precision=spec.base_precision,
            # the seeded initialisation it started from (merges need one start); a warm start's is its source's
            init_seed=None if lineage else cfg.seed,
            **({"warm_start": lineage} if lineage else {}),
        )
        return {"adapter_id": row.id, "version": row.version}

    result = {"metrics": run.result.best_metrics, "steps": run.result.steps, "resumed_from": ctx.resumed_from}
    if lineage:
        result["warm_start"] = lineage
    return Finish(result=result, register=register)


def warm_start_from(ctx: JobContext, spec: AdapterJobSpec, base: Any) -> tuple[Any, dict, dict, str]:
    """The source's adapter config and weights, and the lineage to record: the source and its rank."""
    from service.transfer import resolve_source

    ws = spec.warm_start
    assert ws is not None
    row, lineage = resolve_source(
        ctx.registry,
        ctx.settings,
        lambda _row: base,
        ctx.job.owner_id,
        spec.task,
        ws.source,
        spec.base_model,
        ws.estimator,
        dataset=spec.train_dataset,
    )
    # "auto": the ranking offers only ready, readable transfer sources on this base (`transfer.candidates`)
    art = artifact_store.fetch(ctx.registry, row)
    weights, _ = split_tensors(art)
    return art.config, weights, lineage, (row.method_config or {}).get("preset") or spec.preset


JOB = JobType("adapter", AdapterJobSpec, check, handle)
