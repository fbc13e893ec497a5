"""The production stack for the chaos test: a PostgreSQL cluster and a redis-server of the test's own (so
it can restart them), the API under uvicorn and real Celery workers, all killable for real."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.integration.procs import (
    ROOT,
    RedisServer,
    Worker,
    alive,
    children,
    free_port,
    require_binary,
    wait_healthy,
)


class PostgresServer:
    """initdb + pg_ctl in a directory of its own. PostgreSQL refuses root, so as root it runs as `postgres`."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self.bin = bins[-1] if bins else Path(require_binary("pg_ctl")).parent  # skips, or fails under CI
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.port = free_port()
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "composer")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://composer@127.0.0.1:{self.port}/chaos"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def create_database(self) -> None:
        admin = create_engine(
            f"postgresql+psycopg://composer@127.0.0.1:{self.port}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as c:
            c.execute(text("CREATE DATABASE chaos"))
        admin.dispose()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Api:
    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log, self.port = env, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - uvicorn writes to it for its whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        wait_healthy(self.url, 90)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


class ChaosStack:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.api = Api(env, tmp / "api.log")
        self.workers: list[Worker] = []
        self.seen: set[int] = set()  # every process of ours, to prove none is left behind

    def start_worker(self) -> Worker:
        w = Worker(self.env, self.tmp / f"worker-{len(self.workers)}.log", f"w{len(self.workers)}")
        self.workers.append(w)
        self.seen.add(w.proc.pid)
        return w

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def note_processes(self) -> None:
        for w in self.live_workers():
            self.seen.update(children(w.proc.pid))
        if self.api.proc:
            self.seen.add(self.api.proc.pid)

    def stop(self) -> None:
        self.note_processes()
        for w in self.workers:
            w.stop()
        self.api.stop()


__all__ = ["ChaosStack", "PostgresServer", "RedisServer", "alive", "children"]
