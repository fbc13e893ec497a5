"""Job specs at the boundary: parsed with their job type's model and checked against the registry once,
at submit; what is stored (and what the worker parses) is the normalised spec the checks return."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from composer.presets import PRESETS, preset, training_defaults
from composer.training import TrainConfig
from registry_db.errors import InvalidInput
from service.jobs import JOB_TYPES
from service.jobs.base import JobType, Spec


def job_type(name: str) -> JobType:
    if name not in JOB_TYPES:
        raise InvalidInput(f"job type {name!r} is not available; available: {sorted(JOB_TYPES)}")
    return JOB_TYPES[name]


def parse_spec(name: str, raw: dict[str, Any]) -> Spec:
    return job_type(name).spec.model_validate(raw)


def check_against_registry(s: Session, owner_id: str, name: str, spec: Spec) -> dict[str, Any]:
    """Resolve names to ids and refuse what cannot run. Returns the normalised spec to store."""
    return job_type(name).check(s, owner_id, spec)


def options() -> dict[str, Any]:
    """What a job form offers, from the job types themselves: per type its fields' defaults and the
    hyperparameters that apply when the request gives none; the adapter presets with their configs."""
    types: dict[str, Any] = {}
    for name, jt in JOB_TYPES.items():
        model = jt.spec
        fields = {
            k: f.get_default(call_default_factory=True)
            for k, f in model.model_fields.items()
            if not f.is_required() and k != "hyperparameters"
        }
        entry: dict[str, Any] = {"doc": (model.__doc__ or "").strip(), "fields": fields}
        if "hyperparameters" in model.model_fields:
            entry["hyperparameters"] = TrainConfig.from_dict(jt.hyperparameter_defaults).to_dict()
        types[name] = {**entry, **jt.options}
    presets = {
        p: {
            "fusable": preset(p).fusable,
            "method": preset(p).method,
            "config": preset(p).to_dict(),
            "hyperparameters": TrainConfig.from_dict(training_defaults(p)).to_dict(),
        }
        for p in PRESETS
    }
    return {"job_types": types, "presets": presets}
