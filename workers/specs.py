"""Typed job specs, validated at submit time against the registry, before anything is queued."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from composer.config import PRESETS, preset
from composer.errors import ComposerError
from composer.training import TrainConfig
from registry_db.errors import InvalidInput
from registry_db.repo import adapters as adapter_repo
from registry_db.repo import catalog


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdapterJobSpec(Spec):
    """Train a single-task adapter (ST-A)."""

    task: str
    base_model: str
    train_dataset: str
    validation_dataset: str | None = None
    preset: str = "seq_bn"
    adapter: dict[str, Any] = Field(default_factory=dict)  # BottleneckConfig field overrides
    pooling: Literal["cls", "mean"] = "mean"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; known: {sorted(PRESETS)}")
        return v

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.hyperparameters)


class EvaluateJobSpec(Spec):
    """Score an adapter on a dataset split and store the metrics."""

    adapter: str
    dataset: str


SPECS: dict[str, type[Spec]] = {"adapter": AdapterJobSpec, "evaluate": EvaluateJobSpec}


def parse_spec(job_type: str, raw: dict[str, Any]) -> Spec:
    if job_type not in SPECS:
        raise InvalidInput(f"job type {job_type!r} is not available; available: {sorted(SPECS)}")
    return SPECS[job_type].model_validate(raw)


def _dataset_of_task(s: Session, owner_id: str, dataset_id: str, task_id: str, role: str):  # type: ignore[no-untyped-def]
    ds = catalog.get_dataset(s, dataset_id, owner_id)
    if ds.task_id != task_id:
        raise InvalidInput(f"{role} dataset {dataset_id} belongs to another task")
    return ds


def check_against_registry(s: Session, owner_id: str, job_type: str, spec: Spec) -> dict[str, Any]:
    """Resolve names to ids and refuse what cannot run. Returns the normalised spec to store."""
    if isinstance(spec, AdapterJobSpec):
        try:
            spec.train_config()
            preset(spec.preset, **spec.adapter)
        except ComposerError as e:
            raise InvalidInput(str(e)) from None
        task = catalog.get_task(s, owner_id, spec.task)
        base = catalog.get_base_model(s, spec.base_model)
        train = _dataset_of_task(s, owner_id, spec.train_dataset, task.id, "train")
        if train.split != "train":
            raise InvalidInput(f"dataset {train.id} is a {train.split} split, not train")
        if spec.validation_dataset:
            _dataset_of_task(s, owner_id, spec.validation_dataset, task.id, "validation")
        return spec.model_copy(update={"task": task.id, "base_model": base.id}).model_dump()
    if isinstance(spec, EvaluateJobSpec):
        adapter = adapter_repo.resolve_adapter(s, owner_id, spec.adapter)
        _dataset_of_task(s, owner_id, spec.dataset, adapter.task_id, "evaluation")
        return spec.model_copy(update={"adapter": adapter.id}).model_dump()
    raise InvalidInput(f"no registry checks for {job_type}")
