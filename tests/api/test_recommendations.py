"""POST /v1/tasks/{task}/recommendations over HTTP: the ranking the service layer computes, only the
caller's readable sources, 4xx with the reason; and a warm-start job submitted through /v1/jobs."""

from __future__ import annotations

import pytest

from service import transfer
from service.catalog import load_registered_base
from service.settings import Settings
from tests.api.conftest import HP
from tests.workers.fixtures import jsonl, toy_rows


def upload(api, task, split, rows, key):  # type: ignore[no-untyped-def]
    r = api.client.post(
        f"/v1/tasks/{task}/datasets",
        headers=api.h(key),
        data={"split": split},
        files={"file": (f"{split}.jsonl", jsonl(rows))},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_recommendations_rank_readable_sources_and_refuse_with_reasons(api, tmp_path):
    ids = api.task_with_data("sentiment")
    a = api.train_adapter(ids, name="src-a")
    b = api.train_adapter(ids, name="src-b")
    r = api.client.post(
        "/v1/tasks", json={"name": "target", "kind": "classification", "labels": ["neg", "pos"]}, headers=api.h()
    )
    assert r.status_code == 201
    r = api.client.post("/v1/tasks/target/recommendations", json={"estimator": "logme"}, headers=api.h())
    assert r.status_code == 422 and "no train dataset" in r.json()["detail"]
    upload(api, "target", "train", toy_rows(30, 5), "admin-key-for-tests-0123456789")
    for estimator in ("logme", "semb"):
        r = api.client.post("/v1/tasks/target/recommendations", json={"estimator": estimator}, headers=api.h())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["estimator"] == estimator and body["rows_used"] == 30 and body["seconds"] >= 0
        assert {i["adapter_id"] for i in body["items"]} == {a, b} and all(
            i["source_task"] == "sentiment" for i in body["items"]
        )
        # the same numbers as the service layer gives on a freshly loaded base
        owner = api.client.get("/v1/tasks/target", headers=api.h()).json()
        with api.registry.tx() as s:
            from registry_db.models import Task

            owner_id = s.get(Task, owner["id"]).owner_id
        settings = Settings(data_dir=tmp_path / "fresh")
        fresh = transfer.rank(
            api.registry,
            settings,
            lambda row: load_registered_base(row, "cpu", api.registry),
            owner_id,
            "target",
            estimator,
        )
        assert [(i["adapter_id"], pytest.approx(i["score"], abs=1e-5)) for i in fresh.items] == [
            (i["adapter_id"], i["score"]) for i in body["items"]
        ]
    assert api.client.post("/v1/tasks/nope/recommendations", json={}, headers=api.h()).status_code == 404
    # a merge of the target's top sources, chosen by the service
    r = api.client.post("/v1/merges", json={"members": {"auto": 2, "task": "target"}}, headers=api.h())
    assert r.status_code == 201, r.text
    lineage = r.json()["method_config"]["merge"]
    assert set(lineage["members"]) == {a, b} and lineage["chosen"]["task"] == "target"
    r = api.client.post("/v1/merges", json={"members": {"auto": 1, "task": "target"}}, headers=api.h())
    assert r.status_code == 422
    r = api.client.post("/v1/tasks/target/recommendations", json={"estimator": "vibes"}, headers=api.h())
    assert r.status_code == 422
    # another owner: its own task, no readable sources; acme's task is not there for it
    other = api.key(["train", "read"], owner="rival")
    api.client.post(
        "/v1/tasks", json={"name": "mine", "kind": "classification", "labels": ["neg", "pos"]}, headers=api.h(other)
    )
    upload(api, "mine", "train", toy_rows(20, 6), other)
    r = api.client.post("/v1/tasks/mine/recommendations", json={}, headers=api.h(other))
    assert r.status_code == 422 and "no ready adapters" in r.json()["detail"]
    assert api.client.post("/v1/tasks/target/recommendations", json={}, headers=api.h(other)).status_code == 404
    # a warm start through /v1/jobs from the top-ranked source; from another owner's view it is unknown
    train = api.client.get("/v1/tasks/target/datasets", headers=api.h()).json()["items"][0]["id"]
    job = {
        "type": "adapter",
        "task": "target",
        "base_model": api.base_id,
        "train_dataset": train,
        "hyperparameters": HP,
    }
    r = api.client.post(
        "/v1/jobs", json={**job, "warm_start": {"from": body["items"][0]["adapter_id"]}}, headers=api.h()
    )
    assert r.status_code == 202, r.text
    done = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()
    assert done["status"] == "succeeded" and done["result"]["warm_start"]["from"] == body["items"][0]["adapter_id"]
    mine = api.client.get("/v1/tasks/mine/datasets", headers=api.h(other)).json()["items"][0]["id"]
    bad = {**job, "task": "mine", "train_dataset": mine, "warm_start": {"from": a}}
    assert api.client.post("/v1/jobs", json=bad, headers=api.h(other)).status_code == 404
