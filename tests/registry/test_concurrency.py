"""Two writers racing for one version number or one idempotency key: one wins, the other gets a Conflict."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from registry_db.errors import Conflict
from registry_db.models import Adapter, Job
from registry_db.repo import adapters, jobs
from tests.registry.helpers import seed


def race(fn, n: int = 2) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - collected and asserted on
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_racing_for_the_same_version_number(registry):
    ids = seed(registry)

    def register(_i: int) -> str:
        with registry.tx() as s:
            return adapters.register_adapter(
                s,
                owner_id=ids["owner"],
                task_id=ids["task"],
                base_model_id=ids["base"],
                kind="st_a",
                name="sentiment",
                method_config={},
                hidden_size=384,
                version=1,
            ).id

    results = race(register)
    assert sum(isinstance(r, str) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 1, results
    with registry.tx() as s:
        assert s.scalar(select(func.count()).select_from(Adapter)) == 1


def test_racing_with_the_same_idempotency_key(registry):
    ids = seed(registry)

    def submit(_i: int) -> str:
        with registry.tx() as s:
            return jobs.create_job(s, ids["owner"], "adapter", {}, idempotency_key="retry-me").id

    results = race(submit)
    assert sum(isinstance(r, str) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 1, results
    with registry.tx() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1


def test_auto_versions_under_contention_never_duplicate(registry):
    ids = seed(registry)

    def register(_i: int) -> int:
        return registry.retry(
            lambda s: (
                adapters.register_adapter(
                    s,
                    owner_id=ids["owner"],
                    task_id=ids["task"],
                    base_model_id=ids["base"],
                    kind="st_a",
                    name="sentiment",
                    method_config={},
                    hidden_size=384,
                ).version
            )
        )

    results = race(register, n=4)
    assert sorted(results) == [1, 2, 3, 4], results


def test_a_cancel_while_the_worker_records_a_checkpoint_neither_deadlocks_nor_fails(registry):
    """The worker's checkpoint row takes a key-share lock on its job before the job's row lock; a cancel
    that took the row's update lock first and then asked for the row lock deadlocked with it on PostgreSQL
    (the API answered 503). Writers now take the row lock first: the cancel waits, both commit."""
    from registry_db.models import Checkpoint

    ids = seed(registry)
    with registry.tx() as s:
        job = jobs.create_job(s, ids["owner"], "adapter", {})
    with registry.tx() as s:
        assert jobs.claim(s, job.id, "w1", stale_after=timedelta(seconds=60)) is not None
    cancelled: list[object] = []

    def cancel() -> None:
        try:
            with registry.tx() as s:
                cancelled.append(jobs.request_cancel(s, job.id, ids["owner"]).cancel_requested)
        except Exception as e:  # noqa: BLE001 - asserted on below
            cancelled.append(e)

    with registry.tx() as s:
        s.add(Checkpoint(job_id=job.id, step=1, attempt=1, blob_sha256="0" * 64, size=1))
        s.flush()  # the worker's key-share lock on the job
        t = threading.Thread(target=cancel)
        t.start()
        t.join(0.5)  # the cancel is now waiting (or, on SQLite, for the write lock)
        jobs.append_event(s, job.id, "checkpoint", {"step": 1})
    t.join(30)
    assert cancelled == [True]
    with registry.tx() as s:
        types = [e.type for e in jobs.list_events(s, job.id)]
    assert types[-2:] == ["checkpoint", "cancel_requested"]
