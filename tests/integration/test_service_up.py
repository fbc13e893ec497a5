"""`adapter-service up` as an operator meets it: SIGTERM stops everything it started, a taken port is
refused before anything starts, a key is printed only when it was created, and `create-key` recovers
a lost admin key."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cli.launcher import port_free
from tests.integration.procs import ROOT, alive, children, free_port, wait_for

BOOT = "bootstrap-key-0123456789abcdef"


def service_env(tmp_path, **extra: str) -> dict[str, str]:
    """The embedded defaults in a data directory of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSER_")}
    return {
        **env,
        "COMPOSER_DATA_DIR": str(tmp_path / "data"),
        "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def start(tmp_path, port: int, **env: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.launcher", "up", "--port", str(port)],
        cwd=ROOT,
        env=service_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        lines.append(line)
        if "admin key:" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("no banner:\n" + "".join(lines))


def started(proc: subprocess.Popen) -> list[int]:
    """The API and the worker (with its pool children) that this `up` started: its process tree, whatever
    other workers run on the machine."""
    tree, todo = [], [proc.pid]
    while todo:
        kids = children(todo.pop())
        tree += kids
        todo += kids
    assert len(tree) >= 2, tree
    return tree


def stop(proc: subprocess.Popen, port: int, tree: list[int]) -> None:
    proc.send_signal(signal.SIGTERM)  # what systemd and docker send
    assert proc.wait(60) == 0
    try:
        wait_for(
            lambda: not any(alive(p) for p in tree) and port_free("127.0.0.1", port),
            30,
            "the API and the worker to stop",
        )
    except TimeoutError:
        left = {p: Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:200] for p in tree if alive(p)}
        raise AssertionError(f"still running: {left}; port free: {port_free('127.0.0.1', port)}") from None


def test_sigterm_stops_the_api_and_the_worker_and_keys_are_printed_only_when_created(tmp_path):
    port = free_port()
    proc, lines = start(tmp_path, port, COMPOSER_BOOTSTRAP_KEY=BOOT)
    assert f"admin key: {BOOT}" in "".join(lines)
    tree = started(proc)
    assert httpx.get(f"http://127.0.0.1:{port}/v1/keys", headers={"Authorization": f"Bearer {BOOT}"}).status_code == 200
    stop(proc, port, tree)

    # a second start with another bootstrap value: an admin key exists, so none is printed
    proc, lines = start(tmp_path, port, COMPOSER_BOOTSTRAP_KEY="another-bootstrap-value-123456")
    banner = "".join(lines)
    assert "another-bootstrap-value" not in banner and "create-key" in banner
    out = (
        subprocess.run(
            [sys.executable, "-m", "cli.launcher", "create-key"],
            cwd=ROOT,
            env=service_env(tmp_path),
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert re.fullmatch(r"ak_[\w-]{20,}", out)
    r = httpx.get(f"http://127.0.0.1:{port}/v1/keys", headers={"Authorization": f"Bearer {out}"})
    assert r.status_code == 200 and len(r.json()) == 2
    stop(proc, port, started(proc))


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "cli.launcher", "up", "--port", str(port)],
            cwd=ROOT,
            env=service_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode == 2 and "already in use" in res.stderr
    assert not (tmp_path / "data").exists()  # nothing was migrated or started
