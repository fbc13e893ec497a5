"""Sending job messages. A broker outage never loses a job: the row stays `queued` and the sweep resends."""

from __future__ import annotations

import logging

from celery import Celery

from service.jobs import JOB_TYPES
from workers.app import app

log = logging.getLogger(__name__)
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


def queue_for(job_type: str) -> str:
    """Each job type names its queue: training goes to `gpu`; light work (evaluate) to `default`, which the
    CPU worker consumes."""
    jt = JOB_TYPES.get(job_type)
    return jt.queue if jt is not None else "default"


def enqueue(job_id: str, job_type: str, celery_app: Celery = app) -> bool:
    """Publish a run_job message. Returns False (and logs) when the broker is unreachable."""
    try:
        celery_app.send_task(
            "workers.tasks.run_job", args=[job_id], queue=queue_for(job_type), retry=True, retry_policy=PUBLISH_RETRY
        )
        return True
    except Exception as e:  # noqa: BLE001 - kombu raises several connection error types
        log.warning("could not enqueue job %s: %s", job_id, e)
        return False


def broker_reachable(celery_app: Celery = app) -> tuple[bool, str]:
    """Whether a message could be published now (readiness), and why not."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        return False, f"{type(e).__name__}: {e}"
