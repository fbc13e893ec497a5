"""Chaos on the production stack (PostgreSQL registry with db:// blobs, Redis broker, uvicorn, two Celery
workers), every failure real:

- jobs of three types (adapter, prompts, fusion) are submitted over HTTP, first to run undisturbed (the
  reference), then again, identically, under chaos;
- while the second round runs, the harness SIGKILLs the worker child running a job, SIGKILLs whole
  workers (and starts replacements), restarts Redis without persistence, restarts the API process, and
  restarts PostgreSQL; it also cancels one extra job mid-run;
- then every job has ended `succeeded` (the cancelled one `cancelled`), no job registered its modules
  twice, no process of ours is left, and every result, resumed or not, is bit-identical to the
  reference run of the same spec.

It prints one JSON line of figures (and writes it to $COMPOSER_CHAOS_REPORT when set); docs/operations.md
quotes them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from registry_db.migrate import upgrade
from registry_db.models import Adapter
from registry_db.registry import Registry
from registry_db.repo import jobs
from tests.integration.chaos_stack import ChaosStack, PostgresServer, RedisServer, alive
from tests.integration.procs import wait_for
from tests.workers.fixtures import jsonl, toy_rows

ADMIN = "chaos-operator-key-0123456789abcdef"
HP = {"learning_rate": 1e-2, "batch_size": 4, "patience": 0, "checkpoint_every_steps": 10}


@pytest.fixture()
def chaos(tmp_path):
    pg, redis = PostgresServer(), RedisServer(tmp_path)
    pg.start()
    pg.create_database()
    redis.start()
    upgrade(pg.url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COMPOSER_")},
        "COMPOSER_DATA_DIR": str(tmp_path),
        "COMPOSER_DATABASE_URL": pg.url,
        "COMPOSER_BLOB_URL": "db://",
        "COMPOSER_BROKER_URL": redis.url,
        "COMPOSER_BOOTSTRAP_KEY": ADMIN,
        "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
        "COMPOSER_HEARTBEAT_INTERVAL": "0.5",
        "COMPOSER_STALE_AFTER": "4",
        "COMPOSER_RECONCILE_INTERVAL": "1",
        "COMPOSER_REQUEUE_QUEUED_AFTER": "4",
        "COMPOSER_CHECKPOINT_EVERY_STEPS": "10",
        "COMPOSER_PROGRESS_EVERY_SECONDS": "0.5",
        "COMPOSER_MAX_ATTEMPTS": "20",
        "OMP_NUM_THREADS": "1",
    }
    stack = ChaosStack(tmp_path, env)
    stack.api.start()
    for _ in range(2):
        stack.start_worker()
    reg = Registry.open(pg.url, "db://")
    try:
        yield stack, reg, pg, redis
    finally:
        stack.stop()
        reg.close()
        redis.stop()
        pg.destroy()


def call(stack: ChaosStack, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    """An HTTP call that rides out the API's own restart (connection refused) and a registry outage (503)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.request(
                method,
                stack.api.url + path,
                headers={"Authorization": f"Bearer {ADMIN}", **(headers or {})},
                timeout=30,
                **kw,
            )
            if r.status_code != 503 or time.monotonic() > deadline:
                return r
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_jobs_survive_kills_and_restarts_of_every_component(chaos, tiny_bert_dir):
    stack, reg, pg, redis = chaos
    base = call(stack, "POST", "/v1/base-models", json={"path": str(tiny_bert_dir), "name": "tiny"}).json()["id"]
    assert (
        call(
            stack, "POST", "/v1/tasks", json={"name": "sentiment", "kind": "classification", "labels": ["neg", "pos"]}
        ).status_code
        == 201
    )
    ds = {
        split: call(
            stack,
            "POST",
            "/v1/tasks/sentiment/datasets",
            data={"split": split},
            files={"file": ("d.jsonl", jsonl(toy_rows(n, seed)))},
        ).json()["id"]
        for split, n, seed in (("train", 96, 0), ("validation", 16, 1))
    }
    common = {
        "task": "sentiment",
        "base_model": base,
        "train_dataset": ds["train"],
        "validation_dataset": ds["validation"],
    }

    def submit(body: dict, key: str) -> str:
        r = call(
            stack, "POST", "/v1/jobs", json=body, headers={"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": key}
        )
        assert r.status_code in (200, 202), r.text
        return r.json()["id"]

    def job(job_id: str):  # type: ignore[no-untyped-def]
        return reg.retry(lambda s: jobs.get_job(s, job_id))

    def finished(ids: list[str], timeout: float) -> dict[str, str]:
        wait_for(lambda: all(job(j).status in ("succeeded", "failed", "cancelled") for j in ids), timeout, "jobs", 1)
        return {j: job(j).status for j in ids}

    # fusion members, trained undisturbed
    members = [
        submit(
            {"type": "adapter", **common, "name": f"m{i}", "hyperparameters": {**HP, "epochs": 1, "seed": i}}, f"m{i}"
        )
        for i in range(2)
    ]
    assert set(finished(members, 300).values()) == {"succeeded"}
    members = [job(m).result["adapter_id"] for m in members]
    specs = [
        {"type": "adapter", **common, "name": f"a{i}", "hyperparameters": {**HP, "epochs": 15, "seed": i}}
        for i in range(3)
    ]
    specs += [
        {
            "type": "prompts",
            **common,
            "name": f"p{i}",
            "k": 2,
            "prompt": {"length": 4},
            "hyperparameters": {**HP, "epochs": 10, "learning_rate": 3e-2, "seed": i},
        }
        for i in range(2)
    ]
    specs.append(
        {
            "type": "fusion",
            "task": "sentiment",
            "adapters": members,
            "train_dataset": ds["train"],
            "validation_dataset": ds["validation"],
            "name": "f",
            "hyperparameters": {**HP, "epochs": 10},
        }
    )

    reference = [submit(spec, f"ref{i}") for i, spec in enumerate(specs)]
    assert set(finished(reference, 600).values()) == {"succeeded"}

    chaos_ids = [submit(spec, f"chaos{i}") for i, spec in enumerate(specs)]
    victim = submit({"type": "adapter", **common, "name": "victim", "hyperparameters": {**HP, "epochs": 40}}, "victim")
    figures = {
        "jobs": len(chaos_ids) + 1,
        "child_kills": 0,
        "worker_kills": 0,
        "redis_restarts": 0,
        "api_restarts": 0,
        "postgres_restarts": 0,
    }

    def target() -> tuple[object, int] | None:
        """A live worker and the pid of its child that runs a chaos job which has written a checkpoint."""
        for j in chaos_ids:
            row = job(j)
            if row.status != "running" or not row.worker or not reg.retry(lambda s, j=j: jobs.latest_checkpoint(s, j)):
                continue
            node, pid = row.worker.rsplit(":", 1)
            owners = [w for w in stack.live_workers() if node == f"w{stack.workers.index(w)}@{node.split('@')[1]}"]
            if owners and alive(int(pid)):
                return owners[0], int(pid)
        return None

    def next_target() -> tuple[object, int] | None:
        """Wait for a target; None once every chaos job has ended (the chaos came too late to hit one)."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = target()
            if found or all(job(j).status in ("succeeded", "failed", "cancelled") for j in chaos_ids):
                return found
            time.sleep(0.2)
        raise TimeoutError("no running chaos job with a checkpoint appeared")

    def kill_child() -> None:
        found = next_target()
        if found:
            try:
                os.kill(found[1], signal.SIGKILL)
                figures["child_kills"] += 1
            except ProcessLookupError:  # it finished its job in between
                pass

    def kill_worker() -> None:
        found = next_target()
        if found:
            stack.note_processes()
            found[0].kill()  # type: ignore[attr-defined]
            stack.start_worker()
            figures["worker_kills"] += 1

    def restart(name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            stack.note_processes()
            fn()
            figures[f"{name}_restarts"] += 1

        return go

    schedule = [
        kill_child,
        restart("redis", lambda: (redis.stop(), redis.start())),
        kill_worker,
        restart("api", lambda: (stack.api.stop(), stack.api.start())),
        kill_child,
        restart("postgres", pg.restart),
        kill_worker,
    ]
    for i, action in enumerate(schedule):
        action()
        if i == 1:
            assert call(stack, "POST", f"/v1/jobs/{victim}/cancel").status_code == 200
        stack.note_processes()
        time.sleep(1.5)

    outcome = finished([*chaos_ids, victim], 900)
    assert outcome.pop(victim) == "cancelled"
    lost = {j: s for j, s in outcome.items() if s != "succeeded"}
    resumed = [
        j for j in chaos_ids if any(e.type == "resumed" for e in reg.retry(lambda s, j=j: jobs.list_events(s, j)))
    ]

    def produced(job_id: str) -> list[Adapter]:
        return reg.retry(
            lambda s: list(s.scalars(select(Adapter).where(Adapter.job_id == job_id).order_by(Adapter.name)).all())
        )

    duplicates = sum(max(0, len(produced(c)) - len(produced(r))) for c, r in zip(chaos_ids, reference, strict=True))
    mismatched = [
        c
        for c, r in zip(chaos_ids, reference, strict=True)
        if [a.blob_sha256 for a in produced(c)] != [a.blob_sha256 for a in produced(r)]
    ]
    stack.stop()
    orphans = [p for p in stack.seen if alive(p)]
    figures.update(
        jobs_lost=len(lost),
        duplicates=duplicates,
        resumed=len(resumed),
        mismatched_results=len(mismatched),
        orphans=len(orphans),
        attempts=sum(job(j).attempts for j in chaos_ids),
    )
    print(json.dumps(figures, sort_keys=True))
    if os.environ.get("COMPOSER_CHAOS_REPORT"):
        with open(os.environ["COMPOSER_CHAOS_REPORT"], "w") as f:
            json.dump(figures, f, sort_keys=True)
    assert lost == {}, lost
    assert duplicates == 0 and orphans == []
    assert resumed, "no job was interrupted after a checkpoint: the chaos missed"
    assert mismatched == [], mismatched
