"""The Celery app. Start a worker with

    celery -A workers.app worker -Q gpu,default -c 1 -P prefork

Prefork with concurrency 1 and `max_tasks_per_child=1`: every job runs in a fresh child
process that loads its model there, so CUDA is never initialised before a fork and each
job gets a clean device. Run one such worker per GPU (pin it with CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from service.settings import get_settings

settings = get_settings()

app = Celery("composer", broker=settings.broker, include=["workers.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_max_tasks_per_child=1,
    worker_concurrency=1,
    task_soft_time_limit=settings.soft_time_limit,
    task_time_limit=settings.time_limit,
    broker_transport_options=settings.broker_transport_options,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    task_ignore_result=True,  # the job row in the registry is the truth, not a result backend
    task_queues=(Queue("gpu"), Queue("default")),
    task_default_queue="default",
    task_routes={"workers.tasks.run_job": {"queue": "gpu"}},
    worker_hijack_root_logger=False,
    task_serializer="json",
    accept_content=["json"],
)
