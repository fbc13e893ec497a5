"""Helpers for the dashboard tests: the service (uvicorn + a real Celery worker on the embedded broker),
headless Chromium through selenium, axe-core audits and keyboard walks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from registry_db.migrate import upgrade
from tests.http import client as live_client
from tests.integration.procs import ROOT, Worker, free_port, wait_for, wait_healthy

ADMIN = "ui-admin-key-0123456789abcdef"
IMG = ROOT / "docs" / "img"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"  # axe-core 4.14.1 (MPL-2.0), vendored: no CDN in tests
FINISHED = ("succeeded", "failed", "cancelled")


def browser(tmp: Path):  # type: ignore[no-untyped-def]
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        msg = "CHROMIUM NOT INSTALLED: browser tests not run (scripts/install.sh installs chromium chromium-driver)"
        if os.environ.get("COMPOSER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    flags = "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
    flags += " --disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1280,1000"
    for flag in [*flags.split(), f"--user-data-dir={tmp / 'chrome'}"]:
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


class Stack:
    """uvicorn serving the API and /ui, and one Celery worker, on SQLite and the embedded broker."""

    def __init__(self, tmp: Path):
        db = f"sqlite:///{tmp / 'registry.db'}"
        upgrade(db)
        self.env = {
            **os.environ,
            "COMPOSER_DATA_DIR": str(tmp),
            "COMPOSER_DATABASE_URL": db,
            "COMPOSER_BLOB_URL": f"file://{tmp / 'blobs'}",
            "COMPOSER_BROKER_URL": f"sqla+sqlite:///{tmp / 'broker.db'}",
            "COMPOSER_BOOTSTRAP_KEY": ADMIN,
            "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
            "COMPOSER_PROGRESS_EVERY_SECONDS": "0",
            "COMPOSER_HEARTBEAT_INTERVAL": "0.5",  # a killed worker's job is found stale within seconds
            "COMPOSER_STALE_AFTER": "3",
            "COMPOSER_RECONCILE_INTERVAL": "1",
            "OMP_NUM_THREADS": "1",
        }
        self.tmp = tmp
        port = free_port()
        self.log = open(tmp / "api.log", "wb")  # noqa: SIM115 - uvicorn writes to it for its whole life
        cmd = [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)]
        self.api = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, 60)
        self.worker = Worker(self.env, tmp / "worker.log", "ui")
        self.http = live_client(self.url, ADMIN)

    def wait_job(self, job_id: str, timeout: float = 240) -> dict:
        def done() -> dict | None:
            j = self.http.get(f"/v1/jobs/{job_id}").json()
            return j if j["status"] in FINISHED else None

        return wait_for(done, timeout, f"job {job_id}", 0.3)

    def restart_worker(self, kill: bool = True) -> None:
        """kill -9 the worker (and the child running a job), then start a fresh one."""
        if kill:
            self.worker.kill()
        self.worker = Worker(self.env, self.tmp / "worker-2.log", "ui2")

    def stop(self) -> None:
        self.worker.stop()
        self.api.terminate()
        self.api.wait(20)
        self.http.close()


def axe_violations(d) -> list[dict]:  # type: ignore[no-untyped-def]
    """axe-core's WCAG 2 A/AA audit of the page as it is now (labels, names, roles, contrast, ...)."""
    if not d.execute_script("return !!window.axe"):
        d.execute_script(AXE.read_text())
    res = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        ".then((r) => done(JSON.stringify(r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5)})))), (e) => done(JSON.stringify([{id: 'axe-error', help: String(e)}])));"
    )
    return json.loads(res)


def tab_order(d, start_id: str, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Focus `start_id`, then press Tab `count` times: the ids that receive focus, in order."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    d.execute_script(f"document.getElementById('{start_id}').focus()")
    seen = [d.execute_script("return document.activeElement.id")]
    for _ in range(count):
        ActionChains(d).send_keys(Keys.TAB).perform()
        seen.append(d.execute_script("return document.activeElement.id"))
    return seen


def drop_file(d, target_id: str, name: str, content: str) -> None:  # type: ignore[no-untyped-def]
    """A real drop event on the element, carrying a File, as dragging one from the desktop fires."""
    d.execute_script(
        "const [id, name, text] = arguments; const dt = new DataTransfer();"
        "dt.items.add(new File([text], name, {type: 'application/jsonl'}));"
        "const el = document.getElementById(id);"
        "el.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));"
        "el.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
        target_id,
        name,
        content,
    )
