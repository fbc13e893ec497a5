"""Celery tasks. The heavy imports (torch, composer) happen inside the task, in the child process."""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from registry_db.registry import Registry
from service.settings import open_registry
from workers.app import app, settings
from workers.queueing import enqueue

log = logging.getLogger(__name__)
_stop = threading.Event()
_parent_registry: list[Registry] = []


def registry() -> Registry:
    return open_registry(settings)


@app.task(name="workers.tasks.run_job", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    from workers.runner import run

    reg = registry()
    try:
        return run(reg, settings, job_id, node=self.request.hostname)
    finally:
        reg.close()


def _reconcile_loop() -> None:
    from workers.broker import held_job_ids
    from workers.reconcile import sweep

    reg = registry()
    _parent_registry.append(reg)
    while True:
        try:
            sweep(reg, settings, enqueue, held=lambda: held_job_ids(app, settings.requeue_queued_after))
        except Exception:  # noqa: BLE001 - keep sweeping; the next round may succeed
            log.warning("reconcile sweep failed", exc_info=True)
        if _stop.wait(settings.reconcile_interval):
            return


def consumed_queues(consumer: object) -> set[str]:
    queues = getattr(getattr(consumer, "task_consumer", None), "queues", None) or []
    return {q.name for q in queues} or set(app.amqp.queues.consume_from or ())


@worker_ready.connect
def _start_reconciler(sender: object = None, **_: object) -> None:
    """The sweep is light work: the workers that consume the `default` queue (the CPU worker, and the
    embedded one that consumes both) run it; GPU workers keep to training."""
    if "default" in consumed_queues(sender):
        threading.Thread(target=_reconcile_loop, name="reconcile", daemon=True).start()
    else:
        log.info("this worker does not consume the default queue: the reconcile sweep runs elsewhere")


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    _stop.set()


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    # A forked child must not use, or close, the parent's pooled database connections.
    for reg in _parent_registry:
        reg.engine.dispose(close=False)
