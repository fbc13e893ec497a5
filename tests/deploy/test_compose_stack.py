"""docker-compose.yml run as written, without images: each service's `command` starts as a local process
with that service's `environment`, in the file's dependency order. The file's hostnames (`redis`,
`postgres`) map to a local redis-server and PostgreSQL, its volume paths to temporary directories,
and its ports to free ones; the GPU worker's `COMPOSER_DEVICE=cuda` maps to the CPU, since this
machine has no GPU. Nothing else is changed. Then the user's three actions go through that API: train,
fuse, and query an ensemble, plus an evaluate job, which must run on the CPU worker.

This proves the commands, variable names, queues and wiring of the file, though not the images.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.integration.procs import ROOT, RedisServer, free_port, seed_over_http, wait_for

ADMIN = "compose-admin-key-0123456789abcdef"
HP = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}
ORDER = ("migrate", "api", "worker-gpu", "worker-cpu", "flower")


class Stack:
    def __init__(self, tmp: Path, redis: RedisServer, pg_url: str):
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        self.services = compose["services"]
        assert set(ORDER) | {"redis", "postgres"} == set(self.services)
        pg = make_url(pg_url)
        self.replace = {
            "redis://redis:6379": f"redis://127.0.0.1:{redis.port}",
            "composer:composer@postgres:5432/composer": f"{pg.username}@{pg.host}:{pg.port}/{pg.database}",
            "file:///blobs": f"file://{tmp / 'blobs'}",
        }
        self.tmp, self.procs, self.ports = tmp, {}, {"api": free_port(), "flower": free_port()}

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSER_")}
        for key, value in (self.services[name].get("environment") or {}).items():
            value = str(value)
            if value.startswith("${COMPOSER_BOOTSTRAP_KEY"):
                value = ADMIN
            for a, b in self.replace.items():
                value = value.replace(a, b)
            if key == "COMPOSER_DATA_DIR":
                value = str(self.tmp / "data")
            if key == "COMPOSER_DEVICE":
                assert value == "cuda" and name == "worker-gpu"
                value = "cpu"  # no GPU on this machine
            env[key] = value
        return {**env, "OMP_NUM_THREADS": "1", "COMPOSER_HEARTBEAT_INTERVAL": "0.5", "COMPOSER_STALE_AFTER": "5"}

    def command(self, name: str) -> list[str]:
        cmd = [str(c) for c in self.services[name]["command"]]
        cmd = [c.replace("--port=5555", f"--port={self.ports['flower']}") for c in cmd]
        if name == "api":
            cmd[cmd.index("--port") + 1] = str(self.ports["api"])
        return [sys.executable, "-m", *cmd]  # alembic, uvicorn and celery all run as modules

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the process writes to it for its whole life
        proc = subprocess.Popen(
            self.command(name),
            cwd=ROOT,
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture()
def stack(tmp_path, fresh_pg_database):
    redis = RedisServer(tmp_path)
    redis.start()
    st = Stack(tmp_path, redis, fresh_pg_database)
    try:
        assert st.start("migrate").wait(120) == 0, st.log("migrate")  # one-shot, before everything else
        st.start("api")
        wait_for(lambda: ok(f"http://127.0.0.1:{st.ports['api']}/readyz"), 120, "the api")
        for name in ("worker-gpu", "worker-cpu"):
            st.start(name)
            wait_for(lambda n=name: "[queues]" in st.log(n) or st.procs[n].poll() is not None, 90, name)
            assert st.procs[name].poll() is None, st.log(name)
        st.start("flower")
        wait_for(lambda: ok(f"http://127.0.0.1:{st.ports['flower']}/healthcheck"), 60, "flower")
        yield st
    finally:
        st.stop()
        redis.stop()


def test_the_compose_stack_runs_the_three_user_actions(stack, tiny_bert_dir):
    c = httpx.Client(
        base_url=f"http://127.0.0.1:{stack.ports['api']}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    )
    base_id, ds = seed_over_http(c, tiny_bert_dir)

    def wait_job(job_id: str) -> dict:
        def done() -> dict | None:
            job = c.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(done, 300, f"job {job_id}", interval=0.5)
        assert job["status"] == "succeeded", (job, stack.log("worker-gpu")[-3000:])
        return job

    def ran_on(job_id: str) -> str:
        events = c.get(f"/v1/jobs/{job_id}/events").json()
        items = events["items"] if isinstance(events, dict) else events
        return next(e["payload"]["worker"] for e in items if e["payload"].get("status") == "running")

    # 1. train two adapters (the gpu queue)
    common = {
        "task": "sentiment",
        "base_model": base_id,
        "train_dataset": ds["train"],
        "validation_dataset": ds["validation"],
    }
    adapters = []
    for name in ("a", "b"):
        job = c.post(
            "/v1/jobs",
            json={"type": "adapter", **common, "name": name, "adapter": {"reduction_factor": 4}, "hyperparameters": HP},
        ).json()
        adapters.append(wait_job(job["id"])["result"]["adapter_id"])
        assert ran_on(job["id"]).startswith("gpu@")
    # 2. fuse them
    job = c.post(
        "/v1/fusions",
        json={
            "task": "sentiment",
            "adapters": adapters,
            "train_dataset": ds["train"],
            "validation_dataset": ds["validation"],
            "hyperparameters": HP,
        },
    ).json()
    fusion = wait_job(job["id"])["result"]["adapter_id"]
    r = c.post(
        "/v1/predict", json={"adapter": fusion, "inputs": [{"text": "good movie"}], "return_fusion_attention": True}
    )
    assert r.status_code == 200 and r.json()["outputs"][0]["fusion_attention"]["adapters"] == adapters
    # 3. prompts, then query the ensemble
    job = c.post(
        "/v1/jobs",
        json={
            "type": "prompts",
            **common,
            "k": 3,
            "prompt": {"length": 4},
            "hyperparameters": {**HP, "learning_rate": 3e-2},
        },
    ).json()
    ens = wait_job(job["id"])["result"]["ensemble_id"]
    r = c.post(f"/v1/ensembles/{ens}/predict", json={"inputs": [{"text": "good movie"}], "early_exit": True})
    assert r.status_code == 200 and len(r.json()["outputs"][0]["per_prompt"]) == 3
    # light work goes to the CPU worker
    job = c.post("/v1/jobs", json={"type": "evaluate", "adapter": adapters[0], "dataset": ds["validation"]}).json()
    wait_job(job["id"])
    assert ran_on(job["id"]).startswith("cpu@")
    # every process is still up at the end
    assert all(p.poll() is None for n, p in stack.procs.items() if n != "migrate")
