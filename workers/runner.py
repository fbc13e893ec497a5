"""The skeleton every job runs in: claim, heartbeat, events, checkpoints, cancel, finish.

A job handler gets a `JobContext` and returns a `Finish` (the result and the rows to
register). Registering those rows and marking the job `succeeded` is one transaction,
conditional on this worker still owning the job, so a duplicate delivery can never
produce a second adapter.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from composer.base import LoadedBase
from composer.errors import ComposerError, TrainingCancelled
from composer.training import Callback
from registry_db.errors import Conflict, RegistryError
from registry_db.models import BaseModelRow, Job
from registry_db.registry import Registry
from registry_db.repo import jobs
from workers.settings import Settings

log = logging.getLogger(__name__)


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

    def load_base(self, row: BaseModelRow) -> LoadedBase:
        """A registered base (a derived one from the blob store, cached on this machine) on the job's device."""
        from workers.catalog import load_registered_base

        return load_registered_base(row, self.settings.device, self.registry, self.settings.data_dir)

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


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _heartbeat_loop(ctx: JobContext, stop: threading.Event) -> None:
    while not stop.wait(ctx.settings.heartbeat_interval):
        try:
            with ctx.registry.tx() as s:
                owned, cancel = jobs.heartbeat(s, ctx.job.id, ctx.worker, dict(ctx.progress))
        except Exception:  # noqa: BLE001 - a flaky database must not kill the training thread
            log.warning("heartbeat for %s failed", ctx.job.id, exc_info=True)
            continue
        if cancel:
            ctx.cancel.set()
        if not owned:
            ctx.lost.set()


Handler = Callable[[JobContext], Finish]


def run(
    registry: Registry, settings: Settings, job_id: str, handlers: dict[str, Handler], node: str | None = None
) -> str:
    """Run one delivery of a job. Returns what happened: succeeded, failed, cancelled, or skipped.
    `node` is the Celery worker's name (`gpu@host`); the job's events then say which worker ran it."""
    worker = f"{node}:{os.getpid()}" if node else worker_name()
    with registry.tx() as s:
        job = jobs.claim(s, job_id, worker, timedelta(seconds=settings.stale_after))
        if job is None:
            current = jobs.get_job(s, job_id)
            log.info(
                "job %s not claimed (%s on %s): duplicate or finished delivery", job_id, current.status, current.worker
            )
            return "skipped"
        ckpt = jobs.latest_checkpoint(s, job_id)
    log.info("running job %s (%s, attempt %d) as %s", job_id, job.type, job.attempts, worker)
    ctx = JobContext(registry=registry, settings=settings, job=job, worker=worker)
    handler = handlers.get(job.type)
    if handler is None:
        with registry.tx() as s:
            jobs.fail(s, job_id, worker, {"type": "unsupported", "message": f"no handler for {job.type} jobs"})
        return "failed"
    if ckpt is not None:
        ctx.resume, ctx.resumed_from = registry.blobs.get(ckpt.blob_sha256), ckpt.step
        ctx.event("resumed", {"from_step": ckpt.step, "attempt": job.attempts})
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(ctx, stop), daemon=True)
    beat.start()
    try:
        finish = handler(ctx)

        def commit(s: Session) -> None:
            current = jobs.get_job(s, job_id)
            extra = finish.register(s, current) if finish.register else {}
            jobs.succeed(s, job_id, worker, {**finish.result, **extra})

        def commit_and_prune(s: Session) -> None:  # re-run after a lost acknowledgement: succeed() then refuses
            commit(s)
            jobs.prune_checkpoints(s, job_id, settings.checkpoints_kept_after)

        registry.retry(commit_and_prune, attempts=1)
        return "succeeded"
    except TrainingCancelled:
        with registry.tx() as s:
            jobs.mark_cancelled(s, job_id, worker, step=ctx.progress.get("step"))
            jobs.prune_checkpoints(s, job_id, settings.checkpoints_kept_after)
        return "cancelled"
    except (LostOwnership, Conflict) as e:
        log.warning("job %s: %s; leaving it to its current owner", job_id, e)
        return "skipped"
    except (OperationalError, InterfaceError) as e:
        # The registry stayed unreachable: nothing can be recorded now. The job keeps its `running` row and
        # its checkpoints; once the heartbeat goes stale, a reconcile sweep requeues it and it resumes.
        log.error("job %s: the registry is unreachable (%s); leaving it to the reconcile sweep", job_id, e)
        return "interrupted"
    except Exception as e:  # noqa: BLE001 - every failure is recorded on the job
        tb = traceback.format_exc()
        kind = "invalid_input" if isinstance(e, ComposerError | RegistryError) else type(e).__name__
        try:
            ctx.event("error", {"type": kind, "message": str(e), "traceback": tb})
            with registry.tx() as s:
                jobs.fail(s, job_id, worker, {"type": kind, "message": str(e)})
                jobs.prune_checkpoints(s, job_id, settings.checkpoints_kept_after)
        except Conflict:
            pass
        log.error("job %s failed: %s", job_id, e)
        return "failed"
    finally:
        stop.set()
        beat.join(timeout=5)
