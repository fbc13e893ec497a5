"""The skeleton every job runs in: claim, heartbeat, events, checkpoints, cancel, finish.

Each job type's handler (`service.jobs`) gets a `JobContext` and the job's stored spec, parsed with the
type's model, and returns a `Finish` (the result and the rows to register). Registering those rows and marking the job `succeeded` is one transaction,
conditional on this worker still owning the job, so a duplicate delivery can never
produce a second adapter.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from datetime import timedelta

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from composer.errors import ComposerError, TrainingCancelled
from registry_db.errors import Conflict, RegistryError
from registry_db.registry import Registry
from registry_db.repo import jobs
from service.jobs import JOB_TYPES, JobType
from service.jobs.context import JobContext, LostOwnership
from service.settings import Settings

log = logging.getLogger(__name__)


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


def run(
    registry: Registry,
    settings: Settings,
    job_id: str,
    job_types: dict[str, JobType] = JOB_TYPES,
    node: str | None = None,
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
    job_type = job_types.get(job.type)
    if job_type is None:
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
        finish = job_type.handle(ctx, job_type.spec.model_validate(job.spec))  # the normalised spec, stored at submit

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
