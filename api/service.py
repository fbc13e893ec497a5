"""`adapter-service up`: the whole service on one machine with the embedded defaults.

1. creates or migrates the SQLite registry in COMPOSER_DATA_DIR (default ./data);
2. starts a real Celery worker process on the embedded broker (kombu's SQLAlchemy transport);
3. starts uvicorn, which registers the packaged encoder at start-up;
4. prints the URL and the admin key. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

from registry_db.migrate import upgrade
from registry_db.registry import Registry
from registry_db.repo import keys


def admin_key(reg: Registry, bootstrap: str | None) -> str | None:
    """The bootstrap key if given; else a new admin key when none exists (shown once); else None."""
    if bootstrap:
        return bootstrap
    with reg.tx() as s:
        if keys.admin_key_exists(s):
            return None
        owner = keys.get_or_create_owner(s, "admin")
        _, secret = keys.create_key(s, owner.id, ["admin", "train", "read"], name="adapter-service up")
        return secret


def up(host: str, port: int) -> int:
    data_dir = os.path.abspath(os.environ.setdefault("COMPOSER_DATA_DIR", "data"))
    os.makedirs(data_dir, exist_ok=True)
    env = dict(os.environ)
    print(f"==> registry: migrating ({env.get('COMPOSER_DATABASE_URL') or f'sqlite in {data_dir}'})", flush=True)
    upgrade()
    reg = Registry.from_env()
    key = admin_key(reg, env.get("COMPOSER_BOOTSTRAP_KEY"))
    reg.close()
    procs: list[subprocess.Popen] = []
    worker = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "gpu,default", "-c", "1",
              "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]  # fmt: skip
    print("==> worker: starting a Celery worker on the embedded broker", flush=True)
    procs.append(subprocess.Popen(worker, env=env, start_new_session=True))
    print(f"==> api: starting uvicorn on http://{host}:{port}", flush=True)
    procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port)],
                                  env=env, start_new_session=True))  # fmt: skip
    url = f"http://{host}:{port}"
    try:
        for _ in range(600):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a process exited during start-up; see its output above")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        print("\n" + "=" * 60)
        print(f"  service:   {url}   (API docs: {url}/docs)")
        print(f"  admin key: {key}" if key else "  admin key: an admin key already exists (keys are shown once)")
        print("  Ctrl-C stops the API and the worker")
        print("=" * 60 + "\n", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adapter-service")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the API and a worker with the embedded defaults")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    return up(a.host, a.port)


if __name__ == "__main__":
    raise SystemExit(main())
