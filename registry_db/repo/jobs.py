"""Jobs: creation with the first event, the status machine, the append-only event log, checkpoints.

Ownership of a running job is claimed with conditional UPDATEs, so two deliveries of the
same job (at-least-once brokers) can never both run it: the second backs off while the
first keeps its heartbeat fresh.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from registry_db.errors import Conflict, InvalidInput, NotFound
from registry_db.models import FINISHED, JOB_TYPES, Checkpoint, Job, JobEvent, Owner, utcnow
from registry_db.repo.common import Page, flush_unique, paginate


def lock_job(s: Session, job_id: str) -> None:
    """Take the job's row lock (PostgreSQL; SQLite writes one at a time). Writers of one job (its worker, a
    cancel from the API, the reconciler) take it as their first lock on the job in a transaction: one that
    first holds a weaker lock (an UPDATE's, or the key-share lock a row pointing at the job takes) and then
    asks for this one can deadlock with another doing the same."""
    s.execute(select(Job.id).where(Job.id == job_id).with_for_update())


def append_event(s: Session, job_id: str, type_: str, payload: dict[str, Any]) -> JobEvent:
    # under the job's row lock, so two writers never read the same last seq
    lock_job(s, job_id)
    seq = (s.scalar(select(func.max(JobEvent.seq)).where(JobEvent.job_id == job_id)) or 0) + 1
    ev = JobEvent(job_id=job_id, seq=seq, type=type_, payload=payload)
    s.add(ev)
    flush_unique(s, f"event {seq} of job {job_id} was written concurrently; retry")
    return ev


def create_job(
    s: Session,
    owner_id: str,
    type_: str,
    spec: dict[str, Any],
    idempotency_key: str | None = None,
    max_attempts: int = 3,
) -> Job:
    if type_ not in JOB_TYPES:
        raise InvalidInput(f"job type must be one of {list(JOB_TYPES)}, got {type_!r}")
    if s.get(Owner, owner_id) is None:
        raise NotFound(f"owner {owner_id} does not exist")
    job = Job(owner_id=owner_id, type=type_, spec=spec, idempotency_key=idempotency_key, max_attempts=max_attempts)
    s.add(job)
    flush_unique(s, f"a job with idempotency key {idempotency_key!r} already exists")
    append_event(s, job.id, "status", {"status": "queued"})
    return job


def find_by_idempotency_key(s: Session, owner_id: str, key: str) -> Job | None:
    return s.scalars(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key)).first()


def get_job(s: Session, job_id: str, owner_id: str | None = None) -> Job:
    job = s.get(Job, job_id)
    if job is None or (owner_id is not None and job.owner_id != owner_id):
        raise NotFound(f"job {job_id!r} not found")
    return job


def list_jobs(
    s: Session,
    owner_id: str,
    status: str | None = None,
    type_: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Job]:
    stmt = select(Job).where(Job.owner_id == owner_id)
    if status:
        stmt = stmt.where(Job.status == status)
    if type_:
        stmt = stmt.where(Job.type == type_)
    return paginate(s, stmt, Job, limit, cursor)


def list_events(s: Session, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after).order_by(JobEvent.seq).limit(limit)
    return list(s.scalars(stmt).all())


def claim(s: Session, job_id: str, worker: str, stale_after: timedelta) -> Job | None:
    """Take a job to run: a queued one, or a running one whose heartbeat went stale (its worker died).

    Returns None when the job is finished, cancelled, or alive on another worker (a redelivered
    duplicate must back off)."""
    now = utcnow()
    stale = now - stale_after
    res = s.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            (Job.status == "queued") | ((Job.status == "running") & (Job.heartbeat_at < stale)),
        )
        .values(status="running", worker=worker, heartbeat_at=now, attempts=Job.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = s.get(Job, job_id, populate_existing=True)
    assert job is not None
    if job.started_at is None:
        job.started_at = now
    append_event(s, job_id, "status", {"status": "running", "worker": worker, "attempt": job.attempts})
    return job


def heartbeat(s: Session, job_id: str, worker: str, progress: dict[str, Any] | None = None) -> tuple[bool, bool]:
    """Refresh the heartbeat. Returns (still_owned, cancel_requested)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow(), "updated_at": utcnow()}
    if progress is not None:
        values["progress"] = progress
    res = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    job = s.get(Job, job_id, populate_existing=True)
    return res.rowcount == 1, bool(job and job.cancel_requested)  # type: ignore[attr-defined]


def _finish(s: Session, job_id: str, worker: str | None, status: str, **fields: Any) -> Job:
    lock_job(s, job_id)
    job = s.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is already {job.status}")
    if worker is not None and (job.status != "running" or job.worker != worker):
        raise Conflict(f"job {job_id} is not running on {worker} (status {job.status}, worker {job.worker})")
    now = utcnow()
    job.status, job.finished_at, job.updated_at = status, now, now
    for k, v in fields.items():
        setattr(job, k, v)
    return job


def succeed(s: Session, job_id: str, worker: str | None, result: dict[str, Any]) -> Job:
    job = _finish(s, job_id, worker, "succeeded", result=result)
    append_event(s, job_id, "status", {"status": "succeeded", "result": result})
    return job


def fail(s: Session, job_id: str, worker: str | None, error: dict[str, Any]) -> Job:
    job = _finish(s, job_id, worker, "failed", error=error)
    append_event(s, job_id, "status", {"status": "failed", "error": error})
    return job


def mark_cancelled(s: Session, job_id: str, worker: str | None, step: int | None = None) -> Job:
    job = _finish(s, job_id, worker, "cancelled")
    append_event(s, job_id, "status", {"status": "cancelled", "step": step})
    return job


def request_cancel(s: Session, job_id: str, owner_id: str | None = None) -> Job:
    """A queued job is cancelled at once; a running one is flagged and stops at its next step."""
    job = get_job(s, job_id, owner_id)
    lock_job(s, job_id)  # before the UPDATEs below (see lock_job); the job is read again under it
    s.refresh(job)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is already {job.status}")
    res = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if res.rowcount == 1:  # type: ignore[attr-defined]
        append_event(s, job_id, "status", {"status": "cancelled", "before_start": True})
    else:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True, updated_at=utcnow()))
        append_event(s, job_id, "cancel_requested", {})
    return s.get(Job, job_id, populate_existing=True)  # type: ignore[return-value]


def requeue_or_fail(s: Session, job_id: str, reason: str) -> Job:
    """For a job whose worker died or whose message was lost: queue it again, or fail it after max attempts.
    A job whose cancel was requested ends `cancelled` instead: no worker would ever claim it again."""
    lock_job(s, job_id)
    job = get_job(s, job_id)
    s.refresh(job)
    if job.status in FINISHED:
        return job
    if job.cancel_requested:
        job = _finish(s, job_id, None, "cancelled")
        append_event(s, job_id, "status", {"status": "cancelled", "reason": reason})
        return job
    if job.attempts >= job.max_attempts:
        err = {"type": "max_attempts", "message": f"{reason}; gave up after {job.attempts} attempts"}
        return fail(s, job_id, None, err)
    job.status, job.worker, job.updated_at = "queued", None, utcnow()
    append_event(s, job_id, "requeued", {"reason": reason, "attempts": job.attempts})
    return job


def active_count(s: Session, owner_id: str) -> int:
    stmt = select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status.in_(("queued", "running")))
    return int(s.scalar(stmt) or 0)


def count_by_status(s: Session) -> dict[str, int]:
    return {status: int(n) for status, n in s.execute(select(Job.status, func.count()).group_by(Job.status)).all()}


def stale_running(s: Session, older_than: datetime) -> list[Job]:
    stmt = select(Job).where(Job.status == "running", Job.heartbeat_at < older_than)
    return list(s.scalars(stmt).all())


def queued_before(s: Session, older_than: datetime) -> list[Job]:
    return list(s.scalars(select(Job).where(Job.status == "queued", Job.updated_at < older_than)).all())


def queued_with_cancel(s: Session) -> list[Job]:
    """Queued jobs that can never be claimed: their cancel was requested while they ran, then they were requeued."""
    return list(s.scalars(select(Job).where(Job.status == "queued", Job.cancel_requested.is_(True))).all())


def add_checkpoint(s: Session, job_id: str, step: int, attempt: int, sha256: str, size: int) -> Checkpoint:
    lock_job(s, job_id)  # before the checkpoint row's key-share lock on the job (see lock_job)
    existing = s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)).first()
    if existing is not None:  # the same step again after a resume: keep the newer blob
        existing.blob_sha256, existing.size, existing.attempt = sha256, size, attempt
        ck = existing
    else:
        ck = Checkpoint(job_id=job_id, step=step, attempt=attempt, blob_sha256=sha256, size=size)
        s.add(ck)
    s.flush()
    append_event(s, job_id, "checkpoint", {"step": step, "sha256": sha256, "size": size})
    return ck


def prune_checkpoints(s: Session, job_id: str, keep: int) -> int:
    """Delete all but the newest `keep` checkpoint rows of a job (their blobs go to the GC). Each checkpoint
    carries the best-so-far state too, so the newest one is enough both to resume and to keep the best."""
    rows = s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())).all()
    for ck in rows[keep:]:
        s.delete(ck)
    s.flush()
    return max(0, len(rows) - keep)


def latest_checkpoint(s: Session, job_id: str) -> Checkpoint | None:
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()).limit(1)
    return s.scalars(stmt).first()


def list_checkpoints(s: Session, job_id: str) -> list[Checkpoint]:
    return list(s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)).all())
