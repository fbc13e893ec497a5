"""What a job handler is given and gives back. A handler gets a `JobContext` (the registry, the settings,
its job row, a resume checkpoint, the cancel and ownership flags, events) and returns a `Finish`: the
result and the rows to register, which the worker's runner commits in the success transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from composer.base import LoadedBase
from composer.data import Example, TaskSpec
from composer.training import Callback, TrainConfig
from registry_db.models import BaseModelRow, Job, Task
from registry_db.registry import Registry
from registry_db.repo import catalog, jobs
from service.catalog import load_dataset_examples, load_registered_base, task_spec
from service.settings import Settings


class LostOwnership(Exception):  # noqa: N818
    """Another worker took the job over (ours was presumed dead); stop without writing a result."""


@dataclass
class Finish:
    result: dict[str, Any]
    register: Callable[[Session, Job], dict[str, Any]] | None = None  # runs in the success transaction


@dataclass
class JobContext:
    registry: Registry
    settings: Settings
    job: Job
    worker: str
    resume: bytes | None = None
    resumed_from: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] = field(default_factory=dict)

    def event(self, type_: str, payload: dict[str, Any]) -> None:
        self.registry.retry(lambda s: jobs.append_event(s, self.job.id, type_, payload))

    def load_base(self, row: BaseModelRow, precision: str = "fp32") -> LoadedBase:
        """A registered base (a derived one from the blob store, cached on this machine) on the job's device;
        `precision` "int8" (CPU) or "nf4": frozen and quantised (training on a quantised base)."""
        return load_registered_base(
            row, self.settings.device, self.registry, self.settings.data_dir, precision, kernels=False
        )

    def callback(self) -> Callback:
        return EventCallback(self)


class EventCallback(Callback):
    """Streams training progress to the job's event log and checkpoints to the blob store."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.last_progress = 0.0

    def on_start(self, total_steps: int, resumed_at: int) -> None:
        self.ctx.progress.update(step=resumed_at, total=total_steps)

    def on_step(self, step: int, total: int, epoch: int, loss: float, lr: float) -> None:
        self.ctx.progress.update(step=step, total=total, epoch=epoch, loss=loss, lr=lr)
        now = time.monotonic()
        if step == total or now - self.last_progress >= self.ctx.settings.progress_every_seconds:
            self.last_progress = now
            self.ctx.event("progress", dict(self.ctx.progress))

    def on_evaluate(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.ctx.event("metric", {"step": step, "epoch": epoch, **metrics})

    def on_checkpoint(self, step: int, payload: bytes) -> None:
        ctx = self.ctx
        sha = ctx.registry.blobs.put(payload)

        def add(s: Session) -> None:
            jobs.add_checkpoint(s, ctx.job.id, step, ctx.job.attempts, sha, len(payload))
            jobs.prune_checkpoints(s, ctx.job.id, ctx.settings.checkpoints_kept_while_running)

        ctx.registry.retry(add)

    def should_cancel(self) -> bool:
        if self.ctx.lost.is_set():
            raise LostOwnership(f"job {self.ctx.job.id} was taken over by another worker")
        return self.ctx.cancel.is_set()


def with_checkpoint_default(cfg: TrainConfig, ctx: JobContext) -> TrainConfig:
    """Jobs checkpoint every COMPOSER_CHECKPOINT_EVERY_STEPS unless their hyperparameters say otherwise."""
    if ctx.settings.checkpoint_every_steps and not cfg.checkpoint_every_steps:
        return TrainConfig.from_dict({**cfg.to_dict(), "checkpoint_every_steps": ctx.settings.checkpoint_every_steps})
    return cfg


@dataclass
class JobInputs:
    task: Task
    spec: TaskSpec
    base_row: BaseModelRow
    base: LoadedBase
    train: list[Example]
    validation: list[Example]


def job_inputs(
    ctx: JobContext,
    task_ref: str,
    base_ref: str,
    train_id: str,
    validation_id: str | None,
    base_precision: str = "fp32",
) -> JobInputs:
    """What every training job reads first: its task, datasets (verified blobs) and base model."""
    with ctx.registry.tx() as s:
        task = catalog.get_task(s, ctx.job.owner_id, task_ref)
        base_row = catalog.get_base_model(s, base_ref)
        train_ds = catalog.get_dataset(s, train_id)
        val_ds = catalog.get_dataset(s, validation_id) if validation_id else None
    train = load_dataset_examples(ctx.registry, train_ds, task)
    validation = load_dataset_examples(ctx.registry, val_ds, task) if val_ds else []
    base = ctx.load_base(base_row, base_precision)
    return JobInputs(task, task_spec(task), base_row, base, train, validation)
