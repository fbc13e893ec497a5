"""The API in-process (TestClient) over a SQLite registry with a tiny base model.

Jobs run inline when submitted: the `send` hook calls the real job runner in this process,
so these tests exercise HTTP, auth, validation and serving. The real broker and worker
processes are covered by tests/integration/test_e2e_http.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from registry_db.blobs import LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry
from service.catalog import register_base_model
from service.jobs import JOB_TYPES
from service.settings import Settings
from tests.workers.fixtures import jsonl, toy_rows
from workers.runner import run

ADMIN = "admin-key-for-tests-0123456789"
FAST = Settings(heartbeat_interval=0.2, stale_after=2, checkpoint_every_steps=5, progress_every_seconds=0)
HP = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}


@dataclass
class Api:
    client: TestClient
    registry: Registry
    base_id: str
    outbox: list[str]

    def h(self, key: str = ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def key(self, scopes: list[str], owner: str | None = None) -> str:
        r = self.client.post("/v1/keys", json={"scopes": scopes, "owner": owner}, headers=self.h())
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def task_with_data(self, name: str = "sentiment", key: str = ADMIN) -> dict[str, str]:
        r = self.client.post(
            "/v1/tasks", json={"name": name, "kind": "classification", "labels": ["neg", "pos"]}, headers=self.h(key)
        )
        assert r.status_code == 201, r.text
        ids = {}
        for split, n, seed in (("train", 48, 0), ("validation", 16, 1)):
            r = self.client.post(
                f"/v1/tasks/{name}/datasets",
                headers=self.h(key),
                data={"split": split},
                files={"file": (f"{split}.jsonl", jsonl(toy_rows(n, seed)))},
            )
            assert r.status_code == 201, r.text
            ids[split] = r.json()["id"]
        return ids

    def train_adapter(
        self,
        ids: dict[str, str],
        name: str | None = None,
        key: str = ADMIN,
        task: str = "sentiment",
        preset: str = "seq_bn",
        adapter: dict | None = None,
        **fields: object,
    ) -> str:
        body = {
            **fields,
            "type": "adapter",
            "task": task,
            "base_model": self.base_id,
            "train_dataset": ids["train"],
            "validation_dataset": ids["validation"],
            "preset": preset,
            "adapter": {"reduction_factor": 4} if adapter is None else adapter,
            "hyperparameters": HP,
        }
        if name:
            body["name"] = name
        r = self.client.post("/v1/jobs", json=body, headers=self.h(key))
        assert r.status_code == 202, r.text
        job = self.client.get(f"/v1/jobs/{r.json()['id']}", headers=self.h(key)).json()
        assert job["status"] == "succeeded", job
        return job["result"]["adapter_id"]


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, tmp_path, tiny_bert_dir):
    """The API on SQLite (the embedded default) and on PostgreSQL (production)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_pg_database")
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    reg = Registry(make_engine(url), LocalBlobStore(tmp_path / "blobs"))
    base, _ = register_base_model(reg, tiny_bert_dir, name="tiny-bert")
    outbox: list[str] = []

    def send(job_id: str, job_type: str) -> bool:
        outbox.append(job_id)
        run(reg, FAST, job_id, JOB_TYPES)
        return True

    settings = Settings(data_dir=tmp_path, bootstrap_key=ADMIN, register_packaged_encoder=False, max_upload_mb=0.05)
    app = create_app(settings, registry=reg, send=send)
    with TestClient(app) as client:
        yield Api(client, reg, base.id, outbox)


@pytest.fixture()
def adapterctl(api, monkeypatch):  # type: ignore[no-untyped-def]
    """The `adapterctl` module with its HTTP client pointed at the in-process app."""
    from cli import adapterctl as client_cli

    def init(self, url: str, key: str) -> None:
        api.client.headers["Authorization"] = f"Bearer {key}"
        self.http = api.client

    monkeypatch.setattr(client_cli.Client, "__init__", init)
    return client_cli
