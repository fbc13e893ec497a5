"""Typed job specs, validated at submit time against the registry, before anything is queued."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.orm import Session

from composer import kinds
from composer.adapters.config import PRESETS, preset
from composer.errors import ComposerError
from composer.training import TrainConfig
from registry_db.errors import InvalidInput
from registry_db.repo import adapters as adapter_repo
from registry_db.repo import catalog


def known_preset(v: str) -> str:
    if v not in PRESETS:
        raise ValueError(f"unknown preset {v!r}; known: {sorted(PRESETS)}")
    return v


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
        try:
            self.train_config()
            preset(self.preset, **self.adapter).check_base(architecture, num_layers)
        except ComposerError as e:
            raise InvalidInput(str(e)) from None


class AdapterJobSpec(BottleneckTraining):
    """Train a single-task adapter (ST-A)."""

    task: str
    train_dataset: str
    validation_dataset: str | None = None
    pooling: Literal["cls", "mean"] = "mean"


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


FUSION_DEFAULTS = {"learning_rate": 5e-5, "epochs": 10, "patience": 3}
# a fusion request without a learning rate, with validation data, tries each and keeps the best on validation
LR_GRID = (1e-3, 3e-4, 1e-4)


class FusionJobSpec(Spec):
    """Train an AdapterFusion over 2 to 16 ready adapters of one base, for a target task."""

    task: str
    adapters: list[str] = Field(min_length=2, max_length=16)
    train_dataset: str
    validation_dataset: str | None = None
    fusion: dict[str, Any] = Field(default_factory=dict)  # FusionConfig fields
    pooling: Literal["cls", "mean"] = "mean"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    prune_threshold: float | None = Field(None, gt=0, lt=1)
    name: str | None = None
    base_model: str | None = None  # filled in at submit from the adapters
    # start from the target task's own adapter when it is a member (its head, attention on it)
    warm_start: bool = True
    # fail, instead of registering a copy of the start, when no epoch beats it on validation
    require_improvement: bool = False

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**FUSION_DEFAULTS, **self.hyperparameters})


PROMPT_DEFAULTS = {"learning_rate": 0.3, "epochs": 10, "patience": 3}


class PromptsJobSpec(Spec):
    """Train K soft prompts (each with its own head) for one task, and register them as an ensemble."""

    task: str
    base_model: str
    train_dataset: str
    validation_dataset: str | None = None
    k: int = Field(5, ge=1, le=32)
    prompt: dict[str, Any] = Field(default_factory=lambda: {"length": 20})  # PromptConfig fields
    voting: Literal["majority", "weighted", "mean_prob", "mean_logit"] = "majority"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**PROMPT_DEFAULTS, **self.hyperparameters})


class EvaluateJobSpec(Spec):
    """Score an adapter on a dataset split and store the metrics."""

    adapter: str
    dataset: str


SPECS: dict[str, type[Spec]] = {
    "adapter": AdapterJobSpec,
    "multitask": MultitaskJobSpec,
    "fusion": FusionJobSpec,
    "prompts": PromptsJobSpec,
    "evaluate": EvaluateJobSpec,
}


HYPERPARAMETER_DEFAULTS: dict[str, dict[str, Any]] = {"fusion": FUSION_DEFAULTS, "prompts": PROMPT_DEFAULTS}
# what else a job form shows: the rates a fusion tries when the request gives none and has validation data
EXTRA_OPTIONS: dict[str, dict[str, Any]] = {"fusion": {"learning_rate_grid": list(LR_GRID)}}


def options() -> dict[str, Any]:
    """What a job form offers, from the specs themselves: per job type its fields' defaults and the
    hyperparameters that apply when the request gives none; the adapter presets with their configs."""
    types: dict[str, Any] = {}
    for name, model in SPECS.items():
        fields = {
            k: f.get_default(call_default_factory=True)
            for k, f in model.model_fields.items()
            if not f.is_required() and k != "hyperparameters"
        }
        entry: dict[str, Any] = {"doc": (model.__doc__ or "").strip(), "fields": fields}
        if "hyperparameters" in model.model_fields:
            entry["hyperparameters"] = TrainConfig.from_dict(HYPERPARAMETER_DEFAULTS.get(name, {})).to_dict()
        types[name] = {**entry, **EXTRA_OPTIONS.get(name, {})}
    presets = {p: {"fusable": preset(p).fusable, "config": preset(p).to_dict()} for p in PRESETS}
    return {"job_types": types, "presets": presets}


def parse_spec(job_type: str, raw: dict[str, Any]) -> Spec:
    if job_type not in SPECS:
        raise InvalidInput(f"job type {job_type!r} is not available; available: {sorted(SPECS)}")
    return SPECS[job_type].model_validate(raw)


def _dataset_of_task(s: Session, owner_id: str, dataset_id: str, task_id: str, role: str):  # type: ignore[no-untyped-def]
    ds = catalog.get_dataset(s, dataset_id, owner_id, lock=True)
    if ds.task_id != task_id:
        raise InvalidInput(f"{role} dataset {dataset_id} belongs to another task")
    return ds


def check_against_registry(s: Session, owner_id: str, job_type: str, spec: Spec) -> dict[str, Any]:
    """Resolve names to ids and refuse what cannot run. Returns the normalised spec to store."""
    if isinstance(spec, AdapterJobSpec):
        task = catalog.get_task(s, owner_id, spec.task)
        base = catalog.get_base_model(s, spec.base_model, owner_id)
        spec.check_configs(base.architecture, base.num_layers)
        train = _dataset_of_task(s, owner_id, spec.train_dataset, task.id, "train")
        if train.split != "train":
            raise InvalidInput(f"dataset {train.id} is a {train.split} split, not train")
        if spec.validation_dataset:
            _dataset_of_task(s, owner_id, spec.validation_dataset, task.id, "validation")
        return spec.model_copy(update={"task": task.id, "base_model": base.id}).model_dump()
    if isinstance(spec, MultitaskJobSpec):
        base = catalog.get_base_model(s, spec.base_model, owner_id)
        spec.check_configs(base.architecture, base.num_layers)
        items = []
        for t in spec.tasks:
            task = catalog.get_task(s, owner_id, t.task)
            _dataset_of_task(s, owner_id, t.train_dataset, task.id, "train")
            if t.validation_dataset:
                _dataset_of_task(s, owner_id, t.validation_dataset, task.id, "validation")
            items.append(t.model_copy(update={"task": task.id}))
        if len({t.task for t in items}) != len(items):
            raise InvalidInput("each task appears once in a multi-task job")
        return spec.model_copy(update={"tasks": items, "base_model": base.id}).model_dump()
    if isinstance(spec, FusionJobSpec):
        return check_fusion(s, owner_id, spec)
    if isinstance(spec, PromptsJobSpec):
        from composer.prompts.prompt import PromptConfig

        try:
            spec.train_config()
            PromptConfig.from_dict(spec.prompt)
        except ComposerError as e:
            raise InvalidInput(str(e)) from None
        task = catalog.get_task(s, owner_id, spec.task)
        if task.kind != "classification":
            raise InvalidInput(
                f"task {task.name!r} is a {task.kind} task; prompt ensembles vote over classes, so prompts train "
                "for classification tasks only (train an adapter for a regression task)"
            )
        base = catalog.get_base_model(s, spec.base_model, owner_id)
        _dataset_of_task(s, owner_id, spec.train_dataset, task.id, "train")
        if spec.validation_dataset:
            _dataset_of_task(s, owner_id, spec.validation_dataset, task.id, "validation")
        elif spec.voting == "weighted":
            raise InvalidInput("weighted voting needs a validation dataset to score the prompts")
        return spec.model_copy(update={"task": task.id, "base_model": base.id}).model_dump()
    if isinstance(spec, EvaluateJobSpec):
        adapter = adapter_repo.resolve_adapter(s, owner_id, spec.adapter)
        _dataset_of_task(s, owner_id, spec.dataset, adapter.task_id, "evaluation")
        return spec.model_copy(update={"adapter": adapter.id}).model_dump()
    raise InvalidInput(f"no registry checks for {job_type}")


def check_fusion(s: Session, owner_id: str, spec: FusionJobSpec) -> dict[str, Any]:
    from composer.adapters.fusion import PLACEMENT_FIELDS, FusionConfig

    try:
        spec.train_config()
        FusionConfig.from_dict(spec.fusion)
    except ComposerError as e:
        raise InvalidInput(str(e)) from None
    task = catalog.get_task(s, owner_id, spec.task)
    _dataset_of_task(s, owner_id, spec.train_dataset, task.id, "train")
    if spec.validation_dataset:
        _dataset_of_task(s, owner_id, spec.validation_dataset, task.id, "validation")
    rows = [adapter_repo.resolve_adapter(s, owner_id, ref) for ref in spec.adapters]
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise InvalidInput("the same adapter is listed twice")
    for r in rows:
        if not kinds.get(r.kind).fusable:
            fusable = sorted(k for k, face in kinds.KINDS.items() if face.fusable)
            raise InvalidInput(f"adapter {r.id} is a {r.kind}; only {', '.join(fusable)} adapters can be fused")
        if r.status != "ready":
            raise InvalidInput(f"adapter {r.id} is {r.status}, not ready")
    if len({r.base_model_id for r in rows}) != 1:
        raise InvalidInput("the adapters were trained on different base models and cannot be fused")
    layouts = {tuple(str(r.method_config.get("config", {}).get(f)) for f in PLACEMENT_FIELDS) for r in rows}
    if len(layouts) != 1:
        raise InvalidInput("the adapters have different placements and cannot be fused")
    return spec.model_copy(update={"task": task.id, "adapters": ids}).model_dump() | {
        "base_model": rows[0].base_model_id
    }
