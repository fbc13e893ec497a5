"""Which queue each job goes to, and which workers run the reconcile sweep."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workers import tasks
from workers.queueing import queue_for


@pytest.mark.parametrize(
    ("job_type", "queue"),
    [("adapter", "gpu"), ("multitask", "gpu"), ("fusion", "gpu"), ("prompts", "gpu"), ("evaluate", "default")],
)
def test_training_goes_to_the_gpu_queue_and_light_work_to_the_default_queue(job_type, queue):
    assert queue_for(job_type) == queue


@pytest.mark.parametrize(("queues", "sweeps"), [(["gpu"], False), (["default"], True), (["gpu", "default"], True)])
def test_only_workers_that_consume_the_default_queue_run_the_sweep(monkeypatch, queues, sweeps):
    started: list[str] = []
    monkeypatch.setattr(
        tasks.threading, "Thread", lambda target, name, daemon: SimpleNamespace(start=lambda: started.append(name))
    )
    consumer = SimpleNamespace(task_consumer=SimpleNamespace(queues=[SimpleNamespace(name=q) for q in queues]))
    tasks._start_reconciler(sender=consumer)
    assert started == (["reconcile"] if sweeps else [])
