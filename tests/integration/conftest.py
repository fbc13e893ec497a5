"""A stack per test: a registry (SQLite), a blob directory, a broker, and real worker processes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery

from registry_db.models import Job
from registry_db.repo import jobs
from service.settings import Settings
from tests.integration.procs import RedisServer, Worker, wait_for
from tests.workers.fixtures import World, make_world
from workers.queueing import enqueue


@dataclass
class Stack:
    world: World
    tmp: Path
    broker_url: str
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def publisher(self) -> Celery:
        s = Settings(broker_url=self.broker_url, data_dir=self.tmp)
        app = Celery("test-publisher", broker=s.broker)
        app.conf.broker_transport_options = s.broker_transport_options
        return app

    def send(self, job_id: str, job_type: str) -> bool:
        return enqueue(job_id, job_type, celery_app=self.publisher())

    def start_worker(self, name: str = "w1") -> Worker:
        w = Worker(self.env, self.tmp / f"{name}-{len(self.workers)}.log", name)
        self.workers.append(w)
        return w

    def job(self, job_id: str) -> Job:
        with self.world.registry.tx() as s:
            return jobs.get_job(s, job_id)

    def events(self, job_id: str) -> list:
        with self.world.registry.tx() as s:
            return jobs.list_events(s, job_id)

    def wait_status(self, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> Job:
        try:
            wait_for(lambda: self.job(job_id).status in statuses, timeout, f"job {job_id} to reach {statuses}", 0.2)
        except TimeoutError:
            logs = "\n".join(w.log.read_text()[-2000:] for w in self.workers)
            raise AssertionError(f"job stuck in {self.job(job_id).status}; worker logs:\n{logs}") from None
        return self.job(job_id)


def make_stack(tmp: Path, base_dir: Path, broker_url: str, db_url: str | None = None) -> Stack:
    world = make_world(tmp, base_dir, n_train=64, db_url=db_url)
    env = {
        **os.environ,
        "COMPOSER_DATA_DIR": str(tmp),
        "COMPOSER_DATABASE_URL": world.db_url,
        "COMPOSER_BLOB_URL": world.blob_url,
        "COMPOSER_BROKER_URL": broker_url,
        "COMPOSER_HEARTBEAT_INTERVAL": "0.5",
        "COMPOSER_STALE_AFTER": "3",
        "COMPOSER_RECONCILE_INTERVAL": "1",
        "COMPOSER_REQUEUE_QUEUED_AFTER": "4",
        "COMPOSER_CHECKPOINT_EVERY_STEPS": "10",
        "COMPOSER_PROGRESS_EVERY_SECONDS": "0.2",
        "OMP_NUM_THREADS": "1",
    }
    return Stack(world=world, tmp=tmp, broker_url=broker_url, env=env)


@pytest.fixture()
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["redis+postgresql", "embedded"])
def stack(request, tmp_path, tiny_bert_dir):
    """Production (Redis broker, PostgreSQL registry) and the embedded default (SQLite for both)."""
    if request.param == "redis+postgresql":
        broker, db = request.getfixturevalue("redis_server").url, request.getfixturevalue("fresh_pg_database")
    else:
        broker, db = f"sqla+sqlite:///{tmp_path / 'broker.db'}", None
    st = make_stack(tmp_path, tiny_bert_dir, broker, db)
    yield st
    for w in st.workers:
        w.stop()
    st.world.registry.close()


@pytest.fixture()
def redis_stack(tmp_path, tiny_bert_dir, redis_server):
    st = make_stack(tmp_path, tiny_bert_dir, redis_server.url)
    st.redis = redis_server  # type: ignore[attr-defined]
    yield st
    for w in st.workers:
        w.stop()
    st.world.registry.close()
