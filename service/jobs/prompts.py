"""`prompts` jobs: K soft prompts for one task, each with its own head, registered as an ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from sqlalchemy.orm import Session

from composer.base import positions_of
from composer.presets import PROMPT_PRESETS, PROMPT_TRAINING, prompt_preset
from composer.prompts.ensemble import Voting
from composer.prompts.prompt import PromptConfig
from composer.prompts.training import train_prompts
from composer.training import TrainConfig
from registry_db.errors import InvalidInput
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from service import artifact_store
from service.jobs.base import JobType, Spec, configs_valid, dataset_of_task
from service.jobs.context import Finish, JobContext, job_inputs, with_checkpoint_default

PROMPT_DEFAULTS = PROMPT_TRAINING["prompt_tuning"]


class PromptsJobSpec(Spec):
    """Train K prompts (each with its own head) for one task, and register them as an ensemble: soft prompts,
    P-tuning prompts (through a prompt encoder) or prefixes (deep prompts), by `preset`; `prompt` overrides its
    fields."""

    task: str
    base_model: str
    train_dataset: str
    validation_dataset: str | None = None
    k: int = Field(5, ge=1, le=32)
    preset: Literal["prompt_tuning", "p_tuning", "p_tuning_lstm", "prefix", "p_tuning_v2"] = "prompt_tuning"
    prompt: dict[str, Any] = Field(default_factory=dict)  # PromptConfig fields over the preset's
    voting: Voting = "majority"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**PROMPT_TRAINING[self.preset], **self.hyperparameters})

    def prompt_config(self) -> PromptConfig:
        return prompt_preset(self.preset, **self.prompt)


MIN_INPUT = 8  # the fewest input positions a prompt must leave


def base_positions(path: str) -> int | None:
    """The base's position limit from its config.json (None when it cannot be read)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return positions_of(config) if isinstance(config, dict) else None


def check(s: Session, owner_id: str, spec: PromptsJobSpec) -> dict[str, Any]:
    configs_valid(spec.train_config, spec.prompt_config)
    prompt = spec.prompt_config()
    task = catalog.get_task(s, owner_id, spec.task)
    if task.kind != "classification":
        raise InvalidInput(
            f"task {task.name!r} is a {task.kind} task; prompt ensembles vote over classes, so prompts train "
            "for classification tasks only (train an adapter for a regression task)"
        )
    base = catalog.get_base_model(s, spec.base_model, owner_id)
    positions = base_positions(base.path)
    if positions is not None and prompt.positions_taken + MIN_INPUT > positions:
        raise InvalidInput(
            f"prompt.length: a prompt of {prompt.length} positions leaves fewer than {MIN_INPUT} of base "
            f"{base.name!r}'s {positions} positions for the input; shorten the prompt"
        )
    dataset_of_task(s, owner_id, spec.train_dataset, task.id, "train")
    if spec.validation_dataset:
        dataset_of_task(s, owner_id, spec.validation_dataset, task.id, "validation")
    elif spec.voting == "weighted":
        raise InvalidInput("weighted voting needs a validation dataset to score the prompts")
    return spec.model_copy(update={"task": task.id, "base_model": base.id}).model_dump()


def handle(ctx: JobContext, spec: PromptsJobSpec) -> Finish:
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    inp = job_inputs(ctx, spec.task, spec.base_model, spec.train_dataset, spec.validation_dataset)
    task, tspec, base_row, base = inp.task, inp.spec, inp.base_row, inp.base
    train, validation = inp.train, inp.validation
    run = train_prompts(
        base,
        tspec,
        train,
        validation,
        spec.k,
        spec.prompt_config(),
        cfg,
        callbacks=[ctx.callback()],
        resume=ctx.resume,
    )
    arts = run.artifacts(tspec)
    stored = [artifact_store.store(ctx.registry, art) for art in arts]
    name = spec.name or f"{task.name}-prompts"

    def register(s: Session, job: Job) -> dict:
        ids = []
        for art, shas in zip(arts, stored, strict=True):
            row = artifact_store.register_stored(
                s,
                art,
                shas,
                owner_id=job.owner_id,
                task_id=task.id,
                base_model_id=base_row.id,
                name=f"{name}/{art.name}",
                job_id=job.id,
            )
            ids.append(row.id)
        ens = adapters.create_set(
            s,
            owner_id=job.owner_id,
            kind="ensemble",
            name=f"{name}#{job.id}",
            adapter_ids=ids,
            task_id=task.id,
            voting=spec.voting,
            job_id=job.id,
        )
        return {"adapter_ids": ids, "ensemble_id": ens.id}

    scores = {n: run.result.best_metrics.get(f"{n}/{tspec.metric}") for n in run.names}
    return Finish(
        result={"metrics": run.result.best_metrics, "scores": scores, "steps": run.result.steps}, register=register
    )


JOB = JobType(
    "prompts",
    PromptsJobSpec,
    check,
    handle,
    hyperparameter_defaults=PROMPT_DEFAULTS,
    options={
        "presets": {
            name: {"prompt": PROMPT_PRESETS[name], "hyperparameters": PROMPT_TRAINING[name]} for name in PROMPT_PRESETS
        }
    },
)
