"""The sweep that keeps nothing silently lost: jobs whose worker died, and queued jobs the broker lost.

A job still `queued` after COMPOSER_REQUEUE_QUEUED_AFTER is sent again only when the broker no longer
holds its message (`held`, see workers/broker.py): a long but healthy backlog is never duplicated.

It runs at worker start and then periodically in every worker's main process. Running it
on several workers at once is harmless: re-enqueued duplicates back off at claim time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from registry_db.models import utcnow
from registry_db.registry import Registry
from registry_db.repo import jobs
from service.settings import Settings

log = logging.getLogger(__name__)


def sweep(
    reg: Registry,
    settings: Settings,
    enqueue: Callable[[str, str], bool],
    held: Callable[[], set[str] | None] = lambda: None,
) -> dict[str, list[str]]:
    """`held` names the jobs whose messages the broker still holds (None: it cannot tell)."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.stale_after)
    out: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": [], "reenqueued": []}
    with reg.tx() as s:
        stale = [j.id for j in jobs.stale_running(s, stale_before)]
    for job_id in stale:
        with reg.tx() as s:
            job = jobs.get_job(s, job_id)
            if job.status != "running" or (job.heartbeat_at and job.heartbeat_at >= stale_before):
                continue  # it came back to life, or finished, since the query
            job = jobs.requeue_or_fail(
                s, job_id, f"worker {job.worker} lost: no heartbeat for {settings.stale_after:g}s"
            )
            status, job_type = job.status, job.type
        if status == "queued":
            out["requeued"].append(job_id)
            enqueue(job_id, job_type)
        else:
            out["cancelled" if status == "cancelled" else "failed"].append(job_id)
    with reg.tx() as s:
        for job in jobs.queued_with_cancel(s):  # claim refuses them: end them here
            jobs.requeue_or_fail(s, job.id, "cancel requested; the job was not running")
            out["cancelled"].append(job.id)
    with reg.tx() as s:
        waiting = jobs.queued_before(s, now - timedelta(seconds=settings.requeue_queued_after))
    in_broker = held() if waiting else set()
    with reg.tx() as s:
        lost = [jobs.get_job(s, j.id) for j in waiting if in_broker is None or j.id not in in_broker]
        lost = [j for j in lost if j.status == "queued"]
        for job in lost:
            job.updated_at = now  # wait another full period before sending it again
            jobs.append_event(
                s,
                job.id,
                "reenqueued",
                {
                    "reason": "still queued, and the broker does not hold its message"
                    if in_broker is not None
                    else "still queued; the broker may have lost it"
                },
            )
        lost_ids = [(j.id, j.type) for j in lost]
    for job_id, job_type in lost_ids:
        if enqueue(job_id, job_type):
            out["reenqueued"].append(job_id)
    if any(out.values()):
        log.warning("reconcile: %s", out)
    return out
