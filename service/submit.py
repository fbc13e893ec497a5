"""Submitting a job: validate, write the row with its first event, then enqueue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry_db.errors import Conflict, LimitExceeded
from registry_db.models import Job
from registry_db.registry import Registry
from registry_db.repo import jobs
from service.settings import get_settings
from service.specs import check_against_registry, parse_spec


def submit_job(
    reg: Registry,
    owner_id: str,
    job_type: str,
    raw_spec: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    send: Callable[[str, str], bool],
    max_active: int | None = None,
) -> tuple[Job, bool]:
    """Returns (job, created). `send` publishes "run job X" (the API passes `workers.queueing.enqueue`).
    A retried submit with the same Idempotency-Key returns the first job.

    Bad specs raise (pydantic ValidationError, NotFound, InvalidInput) before anything is written
    or queued. If the broker is down the job is still recorded as queued and is sent by the sweep.
    An owner with `max_active` jobs queued or running (default COMPOSER_MAX_ACTIVE_JOBS_PER_OWNER; 0: no
    limit) gets LimitExceeded."""
    if idempotency_key:
        with reg.tx() as s:
            existing = jobs.find_by_idempotency_key(s, owner_id, idempotency_key)
        if existing is not None:
            return existing, False
    spec = parse_spec(job_type, raw_spec)
    with reg.tx() as s:
        normalised = check_against_registry(s, owner_id, job_type, spec)
    limit = get_settings().max_active_jobs_per_owner if max_active is None else max_active
    try:
        with reg.tx() as s:
            if limit and jobs.active_count(s, owner_id) >= limit:
                raise LimitExceeded(
                    f"this owner has {limit} jobs queued or running, the most it may; "
                    "submit again when one has finished"
                )
            job = jobs.create_job(
                s, owner_id, job_type, normalised, idempotency_key, max_attempts=get_settings().max_attempts
            )
    except Conflict:
        with reg.tx() as s:
            existing = jobs.find_by_idempotency_key(s, owner_id, idempotency_key or "")
        if existing is None:
            raise
        return existing, False
    if not send(job.id, job.type):
        reg.retry(lambda s: jobs.append_event(s, job.id, "enqueue_failed", {"message": "broker unreachable"}))
    return job, True
