"""A healthy backlog is never sent twice: the sweep re-sends a long-queued job only when the broker has
really lost its message. Real brokers: redis-server, and the embedded SQLAlchemy transport."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import Celery
from sqlalchemy import create_engine, text

from registry_db.blobs import LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.models import Job, utcnow
from registry_db.registry import Registry
from registry_db.repo import jobs
from service.settings import Settings
from tests.integration.procs import RedisServer
from tests.registry.helpers import seed
from workers.broker import held_job_ids
from workers.queueing import enqueue
from workers.reconcile import sweep

SETTINGS = Settings(requeue_queued_after=300)


@pytest.fixture(params=["redis", "embedded"])
def broker(request, tmp_path):
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()
        app = Celery("backlog", broker=server.url)

        def lose() -> None:  # a restart without persistence
            server.stop()
            server.start()

        yield app, lose
        server.stop()
    else:
        url = f"sqlite:///{tmp_path / 'broker.db'}"
        app = Celery("backlog", broker=f"sqla+{url}")

        def lose() -> None:
            engine = create_engine(url)
            with engine.begin() as c:
                c.execute(text("DELETE FROM kombu_message"))
            engine.dispose()

        yield app, lose
    app.close()


def test_twenty_jobs_behind_a_long_one_for_twenty_minutes_are_never_sent_twice(tmp_path, broker):
    app, lose = broker
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(db)
    reg = Registry(make_engine(db), LocalBlobStore(tmp_path / "blobs"))
    ids = seed(reg)
    with reg.tx() as s:
        long = jobs.create_job(s, ids["owner"], "adapter", {}).id
        jobs.claim(s, long, "gpu@host:1", timedelta(seconds=60))  # the long one runs, with a fresh heartbeat
        backlog = [jobs.create_job(s, ids["owner"], "adapter", {}).id for _ in range(20)]
    for job_id in backlog:
        assert enqueue(job_id, "adapter", celery_app=app)
    assert held_job_ids(app) == set(backlog)

    sent: list[str] = []

    def send(job_id: str, job_type: str) -> bool:
        sent.append(job_id)
        return enqueue(job_id, job_type, celery_app=app)

    def minutes_pass(m: float) -> None:
        with reg.tx() as s:
            for job in s.query(Job).all():
                job.updated_at = utcnow() - timedelta(minutes=m)
                if job.id == long:
                    job.heartbeat_at = utcnow()

    for minute in range(1, 41):  # a sweep every 30 s for 20 minutes
        minutes_pass(minute / 2)
        out = sweep(reg, SETTINGS, send, held=lambda: held_job_ids(app))
        assert out["reenqueued"] == [] and out["requeued"] == []
    assert sent == [] and held_job_ids(app) == set(backlog)  # 0 duplicate deliveries

    lose()  # now the broker really loses the backlog: each job is sent again, once
    assert held_job_ids(app) == set()
    minutes_pass(10)
    assert sorted(sweep(reg, SETTINGS, send, held=lambda: held_job_ids(app))["reenqueued"]) == sorted(backlog)
    minutes_pass(10)
    assert sweep(reg, SETTINGS, send, held=lambda: held_job_ids(app))["reenqueued"] == []
    assert sorted(sent) == sorted(backlog) and held_job_ids(app) == set(backlog)
    reg.close()


def test_a_message_delivered_to_a_worker_that_died_before_claiming_counts_as_lost(tmp_path, broker):
    """Redis restores such a message only after its visibility timeout (hours); the embedded broker never
    does. Delivered moments ago, it is on its way to a claim; delivered long ago, it is lost."""
    import json
    import time

    app, _ = broker
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(db)
    reg = Registry(make_engine(db), LocalBlobStore(tmp_path / "blobs"))
    with reg.tx() as s:
        job_id = jobs.create_job(s, seed(reg)["owner"], "adapter", {}).id
    assert enqueue(job_id, "adapter", celery_app=app)
    url = app.conf.broker_url

    def deliver(seconds_ago: float) -> None:
        if url.startswith("redis"):
            import redis

            r = redis.Redis.from_url(url)
            msg = r.rpop("gpu") or r.hget("unacked", "tag")
            if isinstance(msg, bytes) and msg.startswith(b"["):
                msg = json.dumps(json.loads(msg)[0]).encode()
            r.hset("unacked", "tag", json.dumps([json.loads(msg), "", "gpu"]))
            r.zadd("unacked_index", {"tag": time.time() - seconds_ago})
            r.close()
        else:
            engine = create_engine(url[len("sqla+") :])
            with engine.begin() as c:
                c.execute(text("UPDATE kombu_message SET visible = false"))
            engine.dispose()

    if url.startswith("redis"):  # just delivered: still held
        deliver(1)
        assert held_job_ids(app, fresh_seconds=60) == {job_id}
    deliver(600)
    assert held_job_ids(app, fresh_seconds=60) == set()
    with reg.tx() as s:
        jobs.get_job(s, job_id).updated_at = utcnow() - timedelta(minutes=10)
    sent: list[str] = []
    out = sweep(reg, SETTINGS, lambda j, t: sent.append(j) or True, held=lambda: held_job_ids(app, 60))
    assert out["reenqueued"] == [job_id] == sent
    reg.close()
