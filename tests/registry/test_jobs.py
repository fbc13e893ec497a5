"""Jobs: one-transaction creation, the status machine, claims under duplicate delivery, cancel, events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from registry_db.errors import Conflict, InvalidInput
from registry_db.models import Job, JobEvent
from registry_db.repo import jobs
from tests.registry.helpers import seed

STALE = timedelta(seconds=30)


def new_job(reg, ids, **kw):
    with reg.tx() as s:
        return jobs.create_job(s, ids["owner"], "adapter", {"task": "sentiment"}, **kw).id


def statuses(reg, job_id):
    with reg.tx() as s:
        return [e.payload.get("status") for e in jobs.list_events(s, job_id) if e.type == "status"]


def test_job_and_first_event_are_one_transaction(registry):
    ids = seed(registry)
    with pytest.raises(RuntimeError), registry.tx() as s:
        jobs.create_job(s, ids["owner"], "adapter", {})
        raise RuntimeError("crash between steps")
    with registry.tx() as s:
        assert s.scalars(select(Job)).all() == [] and s.scalars(select(JobEvent)).all() == []
    job_id = new_job(registry, ids)
    assert statuses(registry, job_id) == ["queued"]


def test_unknown_type_is_refused(registry):
    ids = seed(registry)
    with registry.tx() as s, pytest.raises(InvalidInput):
        jobs.create_job(s, ids["owner"], "finetune", {})


def test_idempotency_key_is_unique_per_owner(registry):
    ids, other = seed(registry), seed(registry, "globex")
    first = new_job(registry, ids, idempotency_key="k1")
    with pytest.raises(Conflict):
        new_job(registry, ids, idempotency_key="k1")
    assert new_job(registry, other, idempotency_key="k1") != first  # keys are per owner
    with registry.tx() as s:
        assert jobs.find_by_idempotency_key(s, ids["owner"], "k1").id == first


def test_a_duplicate_delivery_backs_off_while_the_owner_is_alive(registry):
    ids = seed(registry)
    job_id = new_job(registry, ids)
    with registry.tx() as s:
        assert jobs.claim(s, job_id, "w1", STALE).attempts == 1
    with registry.tx() as s:
        assert jobs.claim(s, job_id, "w2", STALE) is None  # w1's heartbeat is fresh
        owned, cancel = jobs.heartbeat(s, job_id, "w1", {"step": 3})
        assert owned and not cancel
        assert jobs.heartbeat(s, job_id, "w2")[0] is False


def test_a_dead_workers_job_is_reclaimed_and_counts_an_attempt(registry):
    ids = seed(registry)
    job_id = new_job(registry, ids)
    with registry.tx() as s:
        jobs.claim(s, job_id, "w1", STALE)
    with registry.tx() as s:  # no heartbeat since: with a zero staleness window it is dead
        job = jobs.claim(s, job_id, "w2", timedelta(seconds=-1))
        assert job.worker == "w2" and job.attempts == 2
    with registry.tx() as s, pytest.raises(Conflict):
        jobs.succeed(s, job_id, "w1", {})  # the old worker no longer owns it
    with registry.tx() as s:
        jobs.succeed(s, job_id, "w2", {"adapter_id": "ad_x"})
    assert statuses(registry, job_id) == ["queued", "running", "running", "succeeded"]
    with registry.tx() as s:
        assert jobs.claim(s, job_id, "w3", timedelta(seconds=-1)) is None  # finished jobs are never re-run


def test_cancel_queued_never_starts_and_running_is_flagged(registry):
    ids = seed(registry)
    queued, running = new_job(registry, ids), new_job(registry, ids)
    with registry.tx() as s:
        jobs.claim(s, running, "w1", STALE)
    with registry.tx() as s:
        assert jobs.request_cancel(s, queued).status == "cancelled"
        assert jobs.request_cancel(s, running).status == "running"
    with registry.tx() as s:
        assert jobs.claim(s, queued, "w1", STALE) is None
        assert jobs.heartbeat(s, running, "w1") == (True, True)
        jobs.mark_cancelled(s, running, "w1", step=7)
    with registry.tx() as s, pytest.raises(Conflict, match="already cancelled"):
        jobs.request_cancel(s, running)
    assert statuses(registry, running)[-1] == "cancelled"


def test_requeue_then_fail_after_max_attempts(registry):
    ids = seed(registry)
    with registry.tx() as s:
        job_id = jobs.create_job(s, ids["owner"], "adapter", {}, max_attempts=2).id
    for worker in ("w1", "w2"):
        with registry.tx() as s:
            assert jobs.claim(s, job_id, worker, STALE) is not None
        with registry.tx() as s:
            jobs.requeue_or_fail(s, job_id, "worker lost")
    with registry.tx() as s:
        job = jobs.get_job(s, job_id)
        assert job.status == "failed" and job.error["type"] == "max_attempts"
        types = [e.type for e in jobs.list_events(s, job_id)]
    assert types.count("requeued") == 1


def test_a_cancelled_job_whose_worker_died_ends_cancelled_not_queued_forever(registry):
    from service.settings import Settings
    from workers.reconcile import sweep

    ids = seed(registry)
    dead, stuck = new_job(registry, ids), new_job(registry, ids)
    for job_id in (dead, stuck):
        with registry.tx() as s:
            jobs.claim(s, job_id, "w1", STALE)
            jobs.request_cancel(s, job_id)  # running: flagged, to stop at its next step
    with registry.tx() as s:  # the worker died before that step: requeue_or_fail ends it cancelled
        assert jobs.requeue_or_fail(s, dead, "worker lost").status == "cancelled"
    with registry.tx() as s:  # an older build requeued it: claim refuses it, so the sweep must end it
        job = jobs.get_job(s, stuck)
        job.status, job.worker = "queued", None
    with registry.tx() as s:
        assert jobs.claim(s, stuck, "w2", STALE) is None
    sent: list[str] = []
    out = sweep(registry, Settings(), lambda job_id, _type: sent.append(job_id) or True)
    assert out["cancelled"] == [stuck] and sent == []
    for job_id in (dead, stuck):
        assert statuses(registry, job_id)[-1] == "cancelled"
    assert sweep(registry, Settings(), lambda *_: True)["cancelled"] == []


def test_events_are_monotonic_and_paged_by_seq(registry):
    ids = seed(registry)
    job_id = new_job(registry, ids)
    for i in range(5):
        registry.retry(lambda s, i=i: jobs.append_event(s, job_id, "progress", {"step": i}))
    with registry.tx() as s:
        seqs = [e.seq for e in jobs.list_events(s, job_id)]
        tail = [e.payload["step"] for e in jobs.list_events(s, job_id, after=3)]
    assert seqs == [1, 2, 3, 4, 5, 6] and tail == [2, 3, 4]


def test_checkpoints_latest_wins(registry):
    ids = seed(registry)
    job_id = new_job(registry, ids)
    with registry.tx() as s:
        jobs.add_checkpoint(s, job_id, 10, 1, "a" * 64, 100)
        jobs.add_checkpoint(s, job_id, 20, 1, "b" * 64, 100)
        jobs.add_checkpoint(s, job_id, 20, 2, "c" * 64, 100)  # the same step re-saved after a resume
    with registry.tx() as s:
        assert jobs.latest_checkpoint(s, job_id).blob_sha256 == "c" * 64
        assert [c.step for c in jobs.list_checkpoints(s, job_id)] == [10, 20]


def test_job_listing_paginates_with_a_cursor(registry):
    ids = seed(registry)
    made = [new_job(registry, ids) for _ in range(5)]
    seen, cursor = [], None
    while True:
        with registry.tx() as s:
            page = jobs.list_jobs(s, ids["owner"], limit=2, cursor=cursor)
        seen += [j.id for j in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5
