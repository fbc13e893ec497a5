"""End to end over HTTP only: uvicorn, a real Celery worker and a broker (redis-server, and embedded).

The user's three actions (train, fuse, query an ensemble) plus the bad paths: a read-only
key submitting, another owner's adapter, a malformed dataset, an idempotent retry, and
cancelling a running job.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from registry_db.migrate import upgrade
from tests.http import client as live_client
from tests.integration.procs import ROOT, RedisServer, Worker, free_port, seed_over_http, wait_for, wait_healthy
from tests.workers.fixtures import jsonl, toy_rows

ADMIN = "e2e-admin-key-0123456789abcdef"
HP = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}


@pytest.fixture(params=["redis+postgresql", "embedded"])
def service(request, tmp_path):
    """Production (Redis, PostgreSQL) and the embedded default (SQLite registry and broker)."""
    if request.param == "redis+postgresql":
        redis = RedisServer(tmp_path)
        redis.start()
        broker, db = redis.url, request.getfixturevalue("fresh_pg_database")
    else:
        redis, broker = None, f"sqla+sqlite:///{tmp_path / 'broker.db'}"
        db = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(db)
    env = {
        **__import__("os").environ,
        "COMPOSER_DATA_DIR": str(tmp_path),
        "COMPOSER_DATABASE_URL": db,
        "COMPOSER_BLOB_URL": f"file://{tmp_path / 'blobs'}",
        "COMPOSER_BROKER_URL": broker,
        "COMPOSER_BOOTSTRAP_KEY": ADMIN,
        "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
        "COMPOSER_HEARTBEAT_INTERVAL": "0.5",
        "COMPOSER_STALE_AFTER": "5",
        "COMPOSER_SSE_POLL_SECONDS": "0.2",
        "COMPOSER_CHECKPOINT_EVERY_STEPS": "10",
        "COMPOSER_PROGRESS_EVERY_SECONDS": "0.2",
        "OMP_NUM_THREADS": "1",
    }
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    wait_healthy(url, 60)
    worker = Worker(env, tmp_path / "worker.log", "e2e")
    yield url
    worker.stop()
    api.terminate()
    api.wait(20)
    if redis:
        redis.stop()


def follow(c: httpx.Client, job_id: str, timeout: float = 300) -> tuple[dict, list[dict]]:
    """Read the job's Server-Sent Events until it ends; return the job and the events seen."""
    seen = []
    with c.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}, timeout=timeout) as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if "seq" in ev:
                    seen.append(ev)
                else:
                    break
    return c.get(f"/v1/jobs/{job_id}").json(), seen


def test_the_users_three_actions_and_the_bad_paths(service, tiny_bert_dir):
    c = live_client(service, ADMIN)
    base, ds = seed_over_http(c, tiny_bert_dir)
    bad = c.post(
        "/v1/tasks/sentiment/datasets",
        data={"split": "train"},
        files={"file": ("d.jsonl", jsonl(toy_rows(2)) + b'{"text": ""}\n')},
    )
    assert bad.status_code == 422 and bad.json()["line"] == 3
    spec = {
        "type": "adapter",
        "task": "sentiment",
        "base_model": base,
        "train_dataset": ds["train"],
        "validation_dataset": ds["validation"],
        "adapter": {"reduction_factor": 4},
        "hyperparameters": HP,
    }

    # 1. train an adapter, following its events
    r = c.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "first"})
    assert r.status_code == 202
    again = c.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "first"})
    assert again.json()["id"] == r.json()["id"]
    job, events = follow(c, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert "progress" in {e["type"] for e in events}
    a = job["result"]["adapter_id"]
    pred = c.post("/v1/predict", json={"adapter": a, "inputs": [{"text": "good movie"}]}).json()
    assert set(pred["outputs"][0]["probabilities"]) == {"neg", "pos"}

    # 2. fuse two adapters and predict with the fusion attention
    b, _ = follow(c, c.post("/v1/jobs", json={**spec, "name": "second"}).json()["id"])
    fu = c.post(
        "/v1/fusions",
        json={
            "task": "sentiment",
            "adapters": [a, b["result"]["adapter_id"]],
            "train_dataset": ds["train"],
            "hyperparameters": HP,
        },
    )
    assert fu.status_code == 202
    fjob, _ = follow(c, fu.json()["id"])
    assert fjob["status"] == "succeeded", fjob
    out = c.post(
        "/v1/predict",
        json={
            "adapter": fjob["result"]["adapter_id"],
            "inputs": [{"text": "good movie"}],
            "return_fusion_attention": True,
        },
    ).json()["outputs"][0]
    assert out["fusion_attention"]["top_adapter"] in (a, b["result"]["adapter_id"])

    # 3. train prompts and query the ensemble endpoint
    pjob, _ = follow(
        c,
        c.post(
            "/v1/jobs",
            json={
                "type": "prompts",
                "task": "sentiment",
                "base_model": base,
                "train_dataset": ds["train"],
                "validation_dataset": ds["validation"],
                "k": 3,
                "prompt": {"length": 4},
                "hyperparameters": {**HP, "learning_rate": 3e-2},
            },
        ).json()["id"],
    )
    assert pjob["status"] == "succeeded", pjob
    ens = pjob["result"]["ensemble_id"]
    votes = c.post(f"/v1/ensembles/{ens}/predict", json={"inputs": [{"text": "good movie"}], "early_exit": True}).json()
    assert votes["outputs"][0]["label"] in ("neg", "pos") and len(votes["outputs"][0]["per_prompt"]) == 3

    # bad paths: a read-only key submitting, another owner's adapter, cancelling a running job
    read = c.post("/v1/keys", json={"scopes": ["read"]}).json()["key"]
    r = live_client(service, read).post("/v1/jobs", json=spec)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    other = c.post("/v1/keys", json={"scopes": ["train"], "owner": "globex"}).json()["key"]
    assert live_client(service, other).get(f"/v1/adapters/{a}").status_code == 404
    long = c.post("/v1/jobs", json={**spec, "hyperparameters": {**HP, "epochs": 5000}}).json()["id"]  # minutes
    wait_for(lambda: c.get(f"/v1/jobs/{long}").json()["progress"].get("step", 0) > 0, 120, "the long job to run")
    assert c.post(f"/v1/jobs/{long}/cancel").status_code == 200
    cancelled, _ = follow(c, long)
    assert cancelled["status"] == "cancelled"
