"""`adapter-service up`: the whole service on one machine with the embedded defaults.

1. creates or migrates the SQLite registry in COMPOSER_DATA_DIR (default ./data);
2. starts a real Celery worker process on the embedded broker (kombu's SQLAlchemy transport);
3. starts uvicorn, which registers the packaged encoder at start-up;
4. prints the URL, and the admin key when this start created one.

Ctrl-C or SIGTERM (what systemd and docker send) stops the API and the worker with it. A port
that is already taken is refused before anything starts. `adapter-service create-key` mints a
new admin key for an operator who lost theirs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from registry_db.migrate import upgrade
from registry_db.registry import Registry
from registry_db.repo import keys
from service.settings import get_settings, open_registry


def admin_key(reg: Registry, bootstrap: str | None) -> str | None:
    """A new admin key when none exists (the bootstrap value if given), to be shown once; else None.
    An existing admin key is never printed: keys are stored hashed, and a bootstrap value that
    did not create a key may not be one that works."""
    with reg.tx() as s:
        if keys.admin_key_exists(s):
            return None
        owner = keys.get_or_create_owner(s, "admin")
        _, secret = keys.create_key(
            s, owner.id, ["operator", "admin", "train", "read"], name="adapter-service up", secret=bootstrap
        )
        return secret


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _sigterm_is_ctrl_c(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def up(host: str, port: int) -> int:
    if not port_free(host, port):
        print(f"error: {host}:{port} is already in use; stop what listens there or pass --port", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm_is_ctrl_c)
    data_dir = os.path.abspath(os.environ.setdefault("COMPOSER_DATA_DIR", "data"))
    os.makedirs(data_dir, exist_ok=True)
    env = dict(os.environ)
    print(f"==> registry: migrating ({env.get('COMPOSER_DATABASE_URL') or f'sqlite in {data_dir}'})", flush=True)
    upgrade()
    reg = open_registry(get_settings())
    key = admin_key(reg, env.get("COMPOSER_BOOTSTRAP_KEY"))
    reg.close()
    procs: list[subprocess.Popen] = []
    worker = [
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
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]
    print("==> worker: starting a Celery worker on the embedded broker", flush=True)
    procs.append(subprocess.Popen(worker, env=env, start_new_session=True))
    print(f"==> api: starting uvicorn on http://{host}:{port}", flush=True)
    procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port)],
            env=env,
            start_new_session=True,
        )
    )
    url = f"http://{host}:{port}"
    try:
        for _ in range(600):
            if any(p.poll() is not None for p in procs):
                print("error: a process exited during start-up; see its output above", file=sys.stderr)
                return 1
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            print(f"error: the API did not answer on {url} within 2 minutes", file=sys.stderr)
            return 1
        print("\n" + "=" * 60)
        print(f"  service:   {url}   (API docs: {url}/docs)")
        print(
            f"  admin key: {key}"
            if key
            else "  admin key: one already exists and keys are shown once; `adapter-service create-key` mints a new one"
        )
        print("  Ctrl-C stops the API and the worker")
        print("=" * 60 + "\n", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        print("stopped", flush=True)


def create_key(owner: str, scopes: list[str], name: str) -> int:
    """For an operator with access to the registry (the same COMPOSER_* settings as the service)."""
    upgrade()
    reg = open_registry(get_settings())
    try:
        with reg.tx() as s:
            owner_id = keys.get_or_create_owner(s, owner).id
            _, secret = keys.create_key(s, owner_id, scopes, name=name)
    finally:
        reg.close()
    print(secret)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adapter-service")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the API and a worker with the embedded defaults")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8000)
    k = sub.add_parser("create-key", help="mint a new key (an operator key by default) and print it once")
    k.add_argument("--owner", default="admin")
    k.add_argument("--scopes", default="operator,admin,train,read", help="comma-separated")
    k.add_argument("--name", default="adapter-service create-key")
    a = p.parse_args(argv)
    if a.cmd == "create-key":
        return create_key(a.owner, [x.strip() for x in a.scopes.split(",") if x.strip()], a.name)
    return up(a.host, a.port)


if __name__ == "__main__":
    raise SystemExit(main())
