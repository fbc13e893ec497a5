"""What every job type is made of: its spec model (validated at submit), its registry checks (which
resolve names to ids and return the normalised spec that is stored), its handler (run by a worker on
that stored spec) and its queue. A job type is one module of `service.jobs` that defines `JOB`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from composer.errors import ComposerError
from registry_db.errors import InvalidInput
from registry_db.repo import catalog

if TYPE_CHECKING:
    from service.jobs.context import Finish, JobContext


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class JobType:
    name: str
    spec: type[Spec]
    check: Callable[[Session, str, Any], dict[str, Any]]  # (session, owner id, parsed spec) -> normalised spec
    handle: Callable[[JobContext, Any], Finish]  # (context, the stored spec parsed) -> what to register
    queue: Literal["gpu", "default"] = "gpu"  # training on the GPU workers; light work on the CPU worker
    hyperparameter_defaults: dict[str, Any] = field(default_factory=dict)  # what applies when a request gives none
    options: dict[str, Any] = field(default_factory=dict)  # what else a job form shows


def configs_valid(*builds: Callable[[], object]) -> None:
    """Build each config once, so its own validation refuses bad values: InvalidInput (a 422) saying why."""
    try:
        for build in builds:
            build()
    except ComposerError as e:
        raise InvalidInput(str(e)) from None


def dataset_of_task(s: Session, owner_id: str, dataset_id: str, task_id: str, role: str):  # type: ignore[no-untyped-def]
    ds = catalog.get_dataset(s, dataset_id, owner_id, lock=True)
    if ds.task_id != task_id:
        raise InvalidInput(f"{role} dataset {dataset_id} belongs to another task")
    return ds


def task_datasets(s: Session, owner_id: str, task_id: str, train: str, validation: str | None) -> None:
    """The train split and the optional validation set belong to the task."""
    ds = dataset_of_task(s, owner_id, train, task_id, "train")
    if ds.split != "train":
        raise InvalidInput(f"dataset {ds.id} is a {ds.split} split, not train")
    if validation:
        dataset_of_task(s, owner_id, validation, task_id, "validation")
