"""Auth and scopes, problem+json errors, tasks and dataset uploads."""

from __future__ import annotations

import time

from sqlalchemy import select

from registry_db.models import ApiKey, Job
from registry_db.repo import keys as key_repo
from registry_db.repo.jobs import create_job
from tests.api.conftest import ADMIN
from tests.workers.fixtures import jsonl, toy_rows

PROBLEM = "application/problem+json"


def test_missing_and_unknown_keys_are_401_problems(api):
    r = api.client.get("/v1/tasks")
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/unauthorized") and r.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/v1/tasks", headers=api.h("nope-nope-nope-nope")).status_code == 401


def test_scopes(api):
    read = api.key(["read"])
    train = api.key(["train"])
    body = {"name": "t1", "kind": "classification", "labels": ["a", "b"]}
    r = api.client.post("/v1/tasks", json=body, headers=api.h(read))
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")
    assert api.client.post("/v1/tasks", json=body, headers=api.h(train)).status_code == 201
    assert api.client.get("/v1/tasks", headers=api.h(read)).status_code == 200  # read can list
    assert api.client.post("/v1/keys", json={"scopes": ["read"]}, headers=api.h(train)).status_code == 403
    assert api.client.post("/v1/base-models", json={"path": "/tmp"}, headers=api.h(train)).status_code == 403


def test_keys_are_shown_once_and_revocable(api):
    r = api.client.post("/v1/keys", json={"scopes": ["read"], "name": "ci"}, headers=api.h())
    secret, key_id = r.json()["key"], r.json()["id"]
    listed = api.client.get("/v1/keys", headers=api.h()).json()
    assert all("key" not in k for k in listed) and any(k["id"] == key_id for k in listed)
    assert api.client.get("/v1/tasks", headers=api.h(secret)).status_code == 200  # now remembered as valid
    assert api.client.delete(f"/v1/keys/{key_id}", headers=api.h()).status_code == 200
    assert api.client.get("/v1/tasks", headers=api.h(secret)).status_code == 401  # at once in this process


def test_a_key_revoked_by_another_process_is_refused_once_the_auth_cache_expires(api):
    secret = api.key(["read"])
    api.client.app.state.callers.ttl = 0.2
    assert api.client.get("/v1/tasks", headers=api.h(secret)).status_code == 200
    with api.registry.tx() as s:  # what another API process's revoke leaves in the shared registry
        key = s.scalars(select(ApiKey).where(ApiKey.key_hash == key_repo.hash_key(secret))).one()
        key_repo.revoke_key(s, key.id)
    time.sleep(0.25)
    r = api.client.get("/v1/tasks", headers=api.h(secret))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_task_validation_errors_name_the_field(api):
    r = api.client.post("/v1/tasks", json={"name": "x", "kind": "ranking", "labels": []}, headers=api.h())
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM and r.json()["field"] == "kind"
    r = api.client.post(
        "/v1/tasks", json={"name": "x", "kind": "classification", "labels": ["a", "a"]}, headers=api.h()
    )
    assert r.status_code == 422 and "duplicates" in r.json()["detail"]
    api.client.post("/v1/tasks", json={"name": "x", "kind": "classification", "labels": ["a", "b"]}, headers=api.h())
    r = api.client.post(
        "/v1/tasks", json={"name": "x", "kind": "classification", "labels": ["a", "b"]}, headers=api.h()
    )
    assert r.status_code == 409 and r.json()["type"].endswith("/conflict")
    assert api.client.get("/v1/tasks/missing", headers=api.h()).status_code == 404


def test_dataset_upload_validates_rows_deduplicates_and_limits_size(api):
    ids = api.task_with_data()
    ds = api.client.get(f"/v1/datasets/{ids['train']}", headers=api.h()).json()
    assert ds["row_count"] == 48 and ds["label_histogram"] == {"neg": 24, "pos": 24}
    again = api.client.post(
        "/v1/tasks/sentiment/datasets",
        headers=api.h(),
        data={"split": "train"},
        files={"file": ("t.jsonl", jsonl(toy_rows(48, 0)))},
    )
    assert again.json()["id"] == ids["train"] and again.json()["deduplicated"]
    bad = jsonl(toy_rows(3)) + b'{"text": "fine", "label": "maybe"}\n'
    r = api.client.post(
        "/v1/tasks/sentiment/datasets", headers=api.h(), data={"split": "train"}, files={"file": ("bad.jsonl", bad)}
    )
    assert r.status_code == 422 and r.json()["line"] == 4 and "label set" in r.json()["detail"]
    huge = jsonl(toy_rows(2000))
    r = api.client.post(
        "/v1/tasks/sentiment/datasets", headers=api.h(), data={"split": "train"}, files={"file": ("big.jsonl", huge)}
    )
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    r = api.client.post(
        "/v1/tasks/sentiment/datasets",
        headers=api.h(),
        data={"split": "dev"},
        files={"file": ("x.jsonl", jsonl(toy_rows(2)))},
    )
    assert r.status_code == 422 and r.json()["field"] == "split"


def test_a_tasks_datasets_list_page_by_page_and_delete_only_when_unused(api):
    ids = api.task_with_data()
    extra = []
    for seed in (7, 8, 9):
        r = api.client.post(
            "/v1/tasks/sentiment/datasets",
            headers=api.h(),
            data={"split": "train"},
            files={"file": ("t.jsonl", jsonl(toy_rows(12, seed)))},
        )
        extra.append(r.json()["id"])
    seen, cursor = [], None
    while True:  # pages of two, newest first, every dataset once
        q = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/tasks/sentiment/datasets", headers=api.h(), params=q).json()
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == list(reversed([ids["train"], ids["validation"], *extra]))
    val = api.client.get("/v1/tasks/sentiment/datasets?split=validation", headers=api.h()).json()["items"]
    assert [(d["id"], d["row_count"], d["label_histogram"]) for d in val] == [
        (ids["validation"], 16, {"neg": 8, "pos": 8})
    ]
    assert api.client.get("/v1/tasks/sentiment/datasets?split=dev", headers=api.h()).status_code == 422
    assert api.client.get("/v1/tasks/nope/datasets", headers=api.h()).status_code == 404
    other = api.key(["train"], owner="globex")  # another owner sees neither the task's datasets nor can delete
    assert api.client.get("/v1/tasks/sentiment/datasets", headers=api.h(other)).status_code == 404
    assert api.client.delete(f"/v1/datasets/{extra[0]}", headers=api.h(other)).status_code == 404
    reader = api.key(["read"])
    assert api.client.delete(f"/v1/datasets/{extra[0]}", headers=api.h(reader)).status_code == 403

    # a trained adapter holds its datasets; archived, it lets them go
    adapter = api.train_adapter(ids)
    r = api.client.delete(f"/v1/datasets/{ids['train']}", headers=api.h())
    assert r.status_code == 409 and adapter in r.json()["detail"]
    assert api.client.get(f"/v1/datasets/{ids['train']}", headers=api.h()).status_code == 200
    # a queued job holds its dataset
    with api.registry.tx() as s:
        owner = s.scalars(select(Job.owner_id)).first()
        queued = create_job(s, owner, "adapter", {"task": "t", "train_dataset": extra[0], "validation_dataset": None})
    r = api.client.delete(f"/v1/datasets/{extra[0]}", headers=api.h())
    assert r.status_code == 409 and queued.id in r.json()["detail"] and "queued" in r.json()["detail"]
    # an unused one goes, and is gone
    assert api.client.delete(f"/v1/datasets/{extra[1]}", headers=api.h()).status_code == 204
    assert api.client.get(f"/v1/datasets/{extra[1]}", headers=api.h()).status_code == 404
    assert api.client.delete(f"/v1/datasets/{extra[1]}", headers=api.h()).status_code == 404
    assert api.client.post(f"/v1/adapters/{adapter}/archive", headers=api.h()).status_code == 200
    assert api.client.delete(f"/v1/datasets/{ids['train']}", headers=api.h()).status_code == 204
    left = [d["id"] for d in api.client.get("/v1/tasks/sentiment/datasets", headers=api.h()).json()["items"]]
    assert ids["train"] not in left and extra[1] not in left and extra[0] in left


def test_bootstrap_key_is_an_admin_and_base_models_are_listed(api):
    bases = api.client.get("/v1/base-models", headers=api.h(ADMIN)).json()
    assert [b["name"] for b in bases] == ["tiny-bert"] and bases[0]["hidden_size"] == 32


def test_operations_endpoints(api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    metrics = api.client.get("/metrics", headers=api.h()).text  # an operator key (the bootstrap one)
    assert "composer_jobs" in metrics and "composer_http_request_seconds" in metrics
    assert api.client.get("/openapi.json").json()["info"]["title"] == "Adapter composition service"


def test_http_latency_is_counted_per_route_template_and_status(api):
    import re

    def count(route: str, status: str) -> float:
        text = api.client.get("/metrics", headers=api.h()).text
        pattern = (
            rf'composer_http_request_seconds_count{{method="GET",route="{re.escape(route)}",status="{status}"}} (\S+)'
        )
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    before = count("/healthz", "200"), count("/v1/adapters/{ref}", "404"), count("unmatched", "404")
    api.client.get("/healthz")
    assert api.client.get("/v1/adapters/nope", headers=api.h()).status_code == 404
    assert api.client.get("/no/such/path").status_code == 404
    after = count("/healthz", "200"), count("/v1/adapters/{ref}", "404"), count("unmatched", "404")
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


def test_job_options_give_each_forms_defaults_from_the_specs(api):
    """The dashboard's job forms show these: the values the specs fill in when a request omits them."""
    from composer.presets import preset
    from composer.training import TrainConfig

    reader = api.key(["read"])
    o = api.client.get("/v1/jobs/options", headers=api.h(reader)).json()
    assert set(o["job_types"]) == {"adapter", "multitask", "fusion", "prompts", "evaluate"}
    fusion, prompts = o["job_types"]["fusion"], o["job_types"]["prompts"]
    assert fusion["fields"]["warm_start"] is True and fusion["fields"]["require_improvement"] is False
    assert fusion["learning_rate_grid"] == [1e-3, 3e-4, 1e-4]
    assert prompts["fields"]["k"] == 5 and prompts["fields"]["voting"] == "majority"
    assert prompts["hyperparameters"]["learning_rate"] == 0.3
    assert o["job_types"]["adapter"]["hyperparameters"] == TrainConfig().to_dict()
    assert o["job_types"]["multitask"]["fields"]["base_learning_rate"] == 2e-5
    assert "hyperparameters" not in o["job_types"]["evaluate"]
    assert o["presets"]["lora"] == {
        "fusable": False,
        "method": "lora",
        "config": preset("lora").to_dict(),
        "hyperparameters": TrainConfig().to_dict(),
    }
    # a preset's own training defaults (chosen on validation) are what its form shows and its job uses
    assert o["presets"]["ia3"]["hyperparameters"]["learning_rate"] == 1e-2
    assert o["presets"]["compacter"]["fusable"] and o["presets"]["compacter"]["method"] == "compacter"
    assert o["presets"]["seq_bn"]["config"]["reduction_factor"] == 16 and o["presets"]["seq_bn"]["fusable"]
