"""Real processes for integration tests: redis-server and `celery worker`, started and killed for real."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} NOT INSTALLED: integration test not run (scripts/install.sh installs it)"
        if os.environ.get("COMPOSER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_healthy(url: str, timeout: float, what: str = "uvicorn") -> None:
    """Until the server at `url` answers /healthz with 200."""
    import httpx

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, what)


class RedisServer:
    def __init__(self, workdir: Path):
        self.binary = require_binary("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._up, 10, "redis-server")

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                c.sendall(b"PING\r\n")
                return c.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop without saving: whatever was queued in it is lost, as after a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Worker:
    def __init__(self, env: dict[str, str], log: Path, name: str):
        self.log = log
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            "gpu,default",
            "-c",
            "1",
            "-P",
            "prefork",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        out = open(log, "wb")  # noqa: SIM115 - the worker writes to it for its whole life
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: b" ready." in log.read_bytes() or self.proc.poll() is not None, 60, f"worker {name}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited early:\n{log.read_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9 the whole worker (main process and the child running the job)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def seed_over_http(c, base_dir: Path, n_train: int = 48) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """Through the API, as an operator: register the base, create the `sentiment` task and upload its train and
    validation data. Returns (base model id, {split: dataset id})."""
    from tests.workers.fixtures import jsonl, toy_rows

    base = c.post("/v1/base-models", json={"path": str(base_dir), "name": "tiny"})
    assert base.status_code == 201, base.text
    task = c.post("/v1/tasks", json={"name": "sentiment", "kind": "classification", "labels": ["neg", "pos"]})
    assert task.status_code == 201, task.text
    ds = {}
    for split, n, seed in (("train", n_train, 0), ("validation", 16, 1)):
        r = c.post(
            "/v1/tasks/sentiment/datasets", data={"split": split}, files={"file": ("d.jsonl", jsonl(toy_rows(n, seed)))}
        )
        assert r.status_code == 201, r.text
        ds[split] = r.json()["id"]
    return base.json()["id"], ds


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
