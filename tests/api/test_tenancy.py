"""Tenancy: the operator is split from an owner's admin; what one owner may see of another (nothing);
rate limits per key on predict and per owner on active jobs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from service.settings import Settings
from tests.api.conftest import ADMIN, HP


def test_an_owners_admin_manages_its_own_keys_only(api):
    acme_admin = api.key(["admin"], owner="acme")  # the operator (bootstrap key) mints it
    h = api.h(acme_admin)
    r = api.client.post("/v1/keys", headers=h, json={"scopes": ["train"]})
    assert r.status_code == 201 and r.json()["owner_id"] == api.client.get("/v1/keys", headers=h).json()[0]["owner_id"]
    # taking over another tenant, or minting an operator, takes the operator scope
    for body in (
        {"scopes": ["admin"], "owner": "globex"},
        {"scopes": ["admin"], "owner": "admin"},
        {"scopes": ["operator"]},
    ):
        r = api.client.post("/v1/keys", headers=h, json=body)
        assert r.status_code == 403 and "operator" in r.json()["detail"], body
    assert api.client.post("/v1/keys", headers=h, json={"scopes": ["read"], "owner": "acme"}).status_code == 201
    # keys of another owner cannot be listed or revoked
    theirs = api.client.get("/v1/keys", headers=api.h()).json()[0]["id"]
    assert api.client.delete(f"/v1/keys/{theirs}", headers=h).status_code == 404
    assert {k["id"] for k in api.client.get("/v1/keys", headers=h).json()}.isdisjoint({theirs})


def test_base_models_are_managed_by_operators_and_only_they_see_server_paths(api, other_bert_dir):
    admin = api.key(["admin"], owner="acme")
    r = api.client.post("/v1/base-models", headers=api.h(admin), json={"path": str(other_bert_dir)})
    assert r.status_code == 403
    r = api.client.post("/v1/base-models", headers=api.h(), json={"path": str(other_bert_dir), "name": "other"})
    assert r.status_code == 201 and r.json()["path"] == str(other_bert_dir.resolve())
    listed = api.client.get("/v1/base-models", headers=api.h(admin)).json()
    assert len(listed) == 2 and all("path" not in b for b in listed)
    assert all("path" in b for b in api.client.get("/v1/base-models", headers=api.h()).json())


def test_loaded_modules_and_metrics_are_not_shared_across_tenants(api):
    ids = api.task_with_data()
    mine = api.train_adapter(ids)
    assert (
        api.client.post(
            "/v1/predict", headers=api.h(), json={"adapter": mine, "inputs": [{"text": "good"}]}
        ).status_code
        == 200
    )
    other = api.key(["admin"], owner="globex")
    assert [m["id"] for m in api.client.get("/v1/adapters/loaded", headers=api.h()).json()] == [mine]
    assert api.client.get("/v1/adapters/loaded", headers=api.h(other)).json() == []
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=api.h(other)).status_code == 403
    r = api.client.get("/metrics", headers=api.h())
    assert r.status_code == 200 and "composer_jobs" in r.text


@pytest.fixture()
def limited(api, tmp_path):
    """The same registry behind an app with tight limits: 2 predict calls per second (bursts of 3), one
    active job per owner; submitted jobs are only recorded, never run."""
    settings = Settings(
        data_dir=tmp_path,
        bootstrap_key=ADMIN,
        register_packaged_encoder=False,
        predict_rate_per_key=2,
        predict_burst_per_key=3,
        max_active_jobs_per_owner=1,
    )
    app = create_app(settings, registry=api.registry, send=lambda job_id, job_type: True)
    with TestClient(app) as client:
        yield client


def test_predict_calls_are_limited_per_key_with_retry_after(api, limited):
    ids = api.task_with_data()
    adapter = api.train_adapter(ids)
    body = {"adapter": adapter, "inputs": [{"text": "good movie"}]}
    other = api.key(["read"])
    codes = [limited.post("/v1/predict", headers=api.h(), json=body).status_code for _ in range(6)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
    r = limited.post("/v1/predict", headers=api.h(), json=body)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.json()["type"].endswith("rate-limited")
    assert limited.post("/v1/predict", headers=api.h(other), json=body).status_code == 200  # another key's bucket


def test_active_jobs_are_limited_per_owner_at_submit(api, limited):
    ids = api.task_with_data()
    body = {
        "type": "adapter",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "hyperparameters": HP,
    }
    assert limited.post("/v1/jobs", headers=api.h(), json=body).status_code == 202  # queued, never run
    r = limited.post("/v1/jobs", headers=api.h(), json=body)
    assert r.status_code == 429 and r.json()["type"].endswith("too-many-jobs") and "Retry-After" in r.headers
    other = api.key(["train"], owner="globex")  # another owner is not held back
    theirs = api.task_with_data(key=other)
    r = limited.post("/v1/jobs", headers=api.h(other), json={**body, "train_dataset": theirs["train"]})
    assert r.status_code == 202, r.text
