"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, through selenium),
against the running service: uvicorn and a real Celery worker on the embedded broker.
Screenshots of each page go to docs/img/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from registry_db.migrate import upgrade
from tests.integration.procs import ROOT, Worker, free_port, wait_for
from tests.workers.fixtures import jsonl, toy_rows

ADMIN = "ui-admin-key-0123456789abcdef"
IMG = ROOT / "docs" / "img"
HP = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}


def browser(tmp: Path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        msg = "CHROMIUM NOT INSTALLED: browser tests not run (scripts/install.sh installs chromium chromium-driver)"
        if os.environ.get("COMPOSER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={tmp / 'chrome'}"):  # fmt: skip
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


@pytest.fixture()
def stack(tmp_path):
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(db)
    env = {**os.environ, "COMPOSER_DATA_DIR": str(tmp_path), "COMPOSER_DATABASE_URL": db,
           "COMPOSER_BLOB_URL": f"file://{tmp_path / 'blobs'}", "COMPOSER_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
           "COMPOSER_BOOTSTRAP_KEY": ADMIN, "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
           "COMPOSER_PROGRESS_EVERY_SECONDS": "0", "OMP_NUM_THREADS": "1"}  # fmt: skip
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), 60, "uvicorn")
    worker = Worker(env, tmp_path / "worker.log", "ui")
    yield url
    worker.stop()
    api.terminate()
    api.wait(20)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_job(c: httpx.Client, job_id: str) -> dict:
    return wait_for(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"] in ("succeeded", "failed", "cancelled") and j,
                    180, f"job {job_id}", 0.3)  # fmt: skip


def test_dashboard_in_a_real_browser(stack, tmp_path, tiny_bert_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    c = httpx.Client(base_url=stack, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    base = c.post("/v1/base-models", json={"path": str(tiny_bert_dir), "name": "tiny"}).json()["id"]
    c.post("/v1/tasks", json={"name": "sentiment", "kind": "classification", "labels": ["neg", "pos"]})
    ds = {s: c.post("/v1/tasks/sentiment/datasets", data={"split": s}, files={"file": ("d.jsonl", jsonl(toy_rows(n, seed)))}).json()["id"]
          for s, n, seed in (("train", 48, 0), ("validation", 16, 1))}  # fmt: skip
    spec = {"type": "adapter", "task": "sentiment", "base_model": base, "train_dataset": ds["train"],
            "validation_dataset": ds["validation"], "adapter": {"reduction_factor": 4}, "hyperparameters": HP}  # fmt: skip
    first = wait_job(c, c.post("/v1/jobs", json=spec).json()["id"])
    wait_job(c, c.post("/v1/jobs", json={**spec, "name": "second"}).json()["id"])
    watched = c.post("/v1/jobs", json={**spec, "name": "watched", "hyperparameters": {**HP, "epochs": 6}}).json()["id"]

    IMG.mkdir(parents=True, exist_ok=True)
    d = browser(tmp_path)
    wait = WebDriverWait(d, 120)
    try:
        d.get(stack + "/ui")
        wait.until(ec.visibility_of_element_located((By.ID, "key"))).send_keys(ADMIN)
        d.find_element(By.ID, "login-submit").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#jobs-list table")))
        d.save_screenshot(str(IMG / "jobs.png"))

        # 1. watch a job reach succeeded, with its loss curve drawn
        d.get(f"{stack}/ui#/jobs/{watched}")
        wait.until(ec.text_to_be_present_in_element((By.ID, "job-status"), "succeeded"))
        points = wait.until(
            lambda drv: drv.find_element(By.CSS_SELECTOR, "#loss-chart polyline").get_attribute("points")
        )
        assert len(points.split()) >= 2
        d.save_screenshot(str(IMG / "job.png"))

        # 2. request a fusion from the registry page
        d.get(f"{stack}/ui#/registry")
        picks = wait.until(
            lambda drv: (
                drv.find_elements(By.CSS_SELECTOR, ".pick")
                if len(drv.find_elements(By.CSS_SELECTOR, ".pick")) >= 2
                else False
            )
        )
        for box in picks[:2]:
            box.click()
        d.find_element(By.ID, "fuse-train").send_keys(ds["train"])
        d.save_screenshot(str(IMG / "registry.png"))
        d.find_element(By.ID, "fuse").click()
        fusion_job = wait.until(ec.presence_of_element_located((By.ID, "fusion-job"))).text
        done = wait_job(c, fusion_job)
        assert done["status"] == "succeeded", done

        # 3. run a prediction and see the fusion attention heat map
        d.get(f"{stack}/ui#/try")
        target = wait.until(ec.presence_of_element_located((By.ID, "try-target")))
        from selenium.webdriver.support.ui import Select

        Select(target).select_by_value(f"adapter:{done['result']['adapter_id']}")
        d.find_element(By.ID, "try-text").send_keys("a good movie")
        d.find_element(By.ID, "try-run").click()
        heat = wait.until(ec.presence_of_element_located((By.ID, "heatmap")))
        assert len(heat.find_elements(By.CSS_SELECTOR, "td.cell")) >= 2
        assert d.find_element(By.ID, "try-label").text in ("neg", "pos")
        d.save_screenshot(str(IMG / "try.png"))

        # an expired key shows a clear message and asks for a key again
        d.execute_script("sessionStorage.setItem('composer-key', 'revoked-key-0000000000')")
        d.get(f"{stack}/ui#/registry")
        err = wait.until(ec.visibility_of_element_located((By.ID, "error")))
        assert "unknown, revoked or expired" in err.text
        assert d.find_element(By.ID, "login").is_displayed()
        assert first["status"] == "succeeded"
    finally:
        d.quit()
