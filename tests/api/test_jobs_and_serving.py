"""The user's three actions over HTTP (train, fuse, ensemble), plus events, cancel, imports and isolation."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import pytest

from tests.api.conftest import ADMIN, HP


def test_submit_events_predict_and_idempotency(api):
    ids = api.task_with_data()
    adapter_id = api.train_adapter(ids)
    r = api.client.post(
        "/v1/predict",
        headers=api.h(),
        json={"adapter": adapter_id, "inputs": [{"text": "good movie"}, {"text": "bad film"}]},
    )
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert len(outs) == 2 and set(outs[0]["probabilities"]) == {"neg", "pos"}
    assert abs(sum(outs[0]["probabilities"].values()) - 1) < 1e-4
    job_id = api.outbox[-1]
    events = api.client.get(f"/v1/jobs/{job_id}/events", headers=api.h()).json()
    types = [e["type"] for e in events["items"]]
    assert events["status"] == "succeeded" and "progress" in types and types[-1] == "status"
    later = api.client.get(f"/v1/jobs/{job_id}/events?after=2", headers=api.h()).json()["items"]
    assert [e["seq"] for e in later] == list(range(3, len(types) + 1))
    with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers={**api.h(), "Accept": "text/event-stream"}) as s:
        body = "".join(s.iter_text())
    assert "event: progress" in body and "event: end" in body
    cks = api.client.get(f"/v1/jobs/{job_id}/checkpoints", headers=api.h()).json()
    evals = [e["payload"] for e in events["items"] if e["type"] == "metric"]
    assert cks and evals
    for ck in cks:  # each checkpoint with the validation metrics of the last evaluation it holds
        held = [p for p in evals if p["step"] <= ck["step"]]
        want = {k: v for k, v in held[-1].items() if k != "step"} if held else None
        assert ck["metrics"] == want
    assert cks[-1]["metrics"]["accuracy"] == evals[-1]["accuracy"]
    r = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.h())
    assert r.status_code == 409
    body = {
        "type": "adapter",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "hyperparameters": HP,
    }
    first = api.client.post("/v1/jobs", json=body, headers={**api.h(), "Idempotency-Key": "k-1"})
    again = api.client.post("/v1/jobs", json=body, headers={**api.h(), "Idempotency-Key": "k-1"})
    assert first.status_code == 202 and again.status_code == 200 and first.json()["id"] == again.json()["id"]
    listed = api.client.get("/v1/jobs?status=succeeded&type=adapter&limit=1", headers=api.h()).json()
    assert len(listed["items"]) == 1 and listed["next_cursor"]


def test_bad_job_specs_are_refused_before_queueing(api):
    ids = api.task_with_data()
    base = {"type": "adapter", "task": "sentiment", "base_model": api.base_id, "train_dataset": ids["train"]}
    cases = [
        ({"hyperparameters": {"learning_rate": 0}}, 422),
        ({"hyperparameters": {"epochs": 0}}, 422),
        ({"train_dataset": "ds_nope"}, 404),
        ({"base_model": "bm_nope"}, 404),
        ({"preset": "nope"}, 422),
        ({"preset": "lora", "adapter": {"r": 0}}, 422),
        ({"preset": "lora", "adapter": {"target_modules": ["gate_proj"]}}, 422),
        ({"preset": "lora", "adapter": {"layers": [40]}}, 422),
    ]
    for change, status in cases:
        r = api.client.post("/v1/jobs", json={**base, **change}, headers=api.h())
        assert r.status_code == status, (change, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert api.outbox == []


def test_fusion_with_attention_aliases_and_archive(api):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids), api.train_adapter(ids, name="second")
    r = api.client.post(
        "/v1/fusions",
        headers=api.h(),
        json={
            "task": "sentiment",
            "adapters": [a, b],
            "train_dataset": ids["train"],
            "validation_dataset": ids["validation"],
            "hyperparameters": HP,
        },
    )
    assert r.status_code == 202, r.text
    job = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()
    fusion_id = job["result"]["adapter_id"]
    info = api.client.get(f"/v1/adapters/{fusion_id}", headers=api.h()).json()
    assert info["kind"] == "fusion" and info["members"] == [a, b]
    r = api.client.post(
        "/v1/predict",
        headers=api.h(),
        json={"adapter": fusion_id, "inputs": [{"text": "good movie"}], "return_fusion_attention": True},
    )
    att = r.json()["outputs"][0]["fusion_attention"]
    assert att["adapters"] == [a, b] and att["top_adapter"] in (a, b)
    assert all(abs(sum(v) - 1) < 1e-3 for v in att["layers"].values())
    r = api.client.put("/v1/adapters/aliases/sentiment/production", headers=api.h(), json={"adapter": "sentiment:1"})
    assert r.status_code == 200 and r.json()["adapter_id"] == a
    assert (
        api.client.post(
            "/v1/predict", headers=api.h(), json={"adapter": "sentiment@production", "inputs": [{"text": "x y"}]}
        ).status_code
        == 200
    )
    loaded = {m["id"] for m in api.client.get("/v1/adapters/loaded", headers=api.h()).json()}
    assert {a, b, fusion_id} <= loaded
    assert api.client.post(f"/v1/adapters/{b}/archive", headers=api.h()).json()["status"] == "archived"
    assert b not in {m["id"] for m in api.client.get("/v1/adapters/loaded", headers=api.h()).json()}
    r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": b, "inputs": [{"text": "x"}]})
    assert r.status_code == 404 and r.json()["type"].endswith("archived")


def test_prompts_and_the_ensemble_endpoint(api):
    ids = api.task_with_data()
    body = {
        "type": "prompts",
        "task": "sentiment",
        "base_model": api.base_id,
        "train_dataset": ids["train"],
        "validation_dataset": ids["validation"],
        "k": 3,
        "prompt": {"length": 4},
        "hyperparameters": {**HP, "learning_rate": 3e-2},
    }
    job_id = api.client.post("/v1/jobs", json=body, headers=api.h()).json()["id"]
    job = api.client.get(f"/v1/jobs/{job_id}", headers=api.h()).json()
    assert job["status"] == "succeeded", job
    ens = api.client.get("/v1/ensembles?task=sentiment", headers=api.h()).json()
    assert len(ens) == 1 and len(ens[0]["prompts"]) == 3
    inputs = [{"text": "good movie"}, {"text": "awful plot"}, {"text": "the film"}]
    full = api.client.post(f"/v1/ensembles/{ens[0]['id']}/predict", headers=api.h(), json={"inputs": inputs}).json()
    fast = api.client.post(
        f"/v1/ensembles/{ens[0]['id']}/predict", headers=api.h(), json={"inputs": inputs, "early_exit": True}
    ).json()
    assert [o["label"] for o in full["outputs"]] == [o["label"] for o in fast["outputs"]]
    row = full["outputs"][0]
    assert len(row["per_prompt"]) == 3 and 0 < row["agreement"] <= 1 and sum(row["votes"].values()) == 3
    r = api.client.post(
        f"/v1/ensembles/{ens[0]['id']}/predict", headers=api.h(), json={"inputs": inputs, "strategy": "plurality"}
    )
    assert r.status_code == 422
    mine = api.client.post(
        "/v1/ensembles", headers=api.h(), json={"name": "two", "task": "sentiment", "prompts": ens[0]["prompts"][:2]}
    )
    assert mine.status_code == 201 and len(mine.json()["prompts"]) == 2
    r = api.client.post("/v1/ensembles", headers=api.h(), json={"name": "none", "task": "sentiment", "prompts": []})
    assert r.status_code == 422


def test_download_import_roundtrip_and_hostile_archives(api):
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    z = api.client.get(f"/v1/adapters/{a}/download", headers=api.h())
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    r = api.client.post(
        "/v1/adapters/import",
        headers=api.h(),
        data={"task": "sentiment", "base_model": api.base_id, "name": "copy"},
        files={"file": ("a.zip", z.content)},
    )
    assert r.status_code == 201, r.text
    copy = r.json()["id"]
    p1 = api.client.post("/v1/predict", headers=api.h(), json={"adapter": a, "inputs": [{"text": "good movie"}]}).json()
    p2 = api.client.post(
        "/v1/predict", headers=api.h(), json={"adapter": copy, "inputs": [{"text": "good movie"}]}
    ).json()
    assert p1["outputs"] == p2["outputs"]

    def zip_of(entries):  # (name, bytes, is_symlink)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data, link in entries:
                info = zipfile.ZipInfo(name)
                if link:
                    info.external_attr = 0o120777 << 16
                zf.writestr(info, data)
        return buf.getvalue()

    cfg = json.dumps({"config": {}, "hidden_size": 32}).encode()
    hostile = {
        "pickle": zip_of([("adapter_config.json", cfg, False), ("pytorch_adapter.bin", pickle.dumps({"x": 1}), False)]),
        "dotdot": zip_of([("../adapter_config.json", cfg, False)]),
        "absolute": zip_of([("/etc/adapter_config.json", cfg, False)]),
        "symlink": zip_of([("adapter_config.json", b"/etc/passwd", True)]),
        "not-zip": b"this is not a zip",
    }
    for label, data in hostile.items():
        r = api.client.post(
            "/v1/adapters/import",
            headers=api.h(),
            data={"task": "sentiment", "base_model": api.base_id},
            files={"file": ("x.zip", data)},
        )
        assert r.status_code == 422, (label, r.text)
        assert r.headers["content-type"] == "application/problem+json"


def test_another_owners_adapter_is_404_and_never_listed(api):
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    other = api.key(["train"], owner="globex")
    assert api.client.get(f"/v1/adapters/{a}", headers=api.h(other)).status_code == 404
    r = api.client.post("/v1/predict", headers=api.h(other), json={"adapter": a, "inputs": [{"text": "x"}]})
    assert r.status_code == 404
    assert api.client.get("/v1/adapters", headers=api.h(other)).json()["items"] == []
    assert api.client.get(f"/v1/jobs/{api.outbox[0]}", headers=api.h(other)).status_code == 404


def test_an_alias_does_not_move_to_a_fusion_below_its_best_member_unless_forced(api):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids), api.train_adapter(ids, name="second")
    r = api.client.post(
        "/v1/fusions",
        headers=api.h(),
        json={
            "task": "sentiment",
            "adapters": [a, b],
            "train_dataset": ids["train"],
            "validation_dataset": ids["validation"],
            "hyperparameters": HP,
        },
    )
    fusion = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()["result"]
    cmp = fusion["comparison"]
    assert cmp["fusion"] >= cmp["best_member"]["score"]  # a warm start from the better member, kept if best
    assert (
        api.client.put(
            "/v1/adapters/aliases/sentiment/prod", headers=api.h(), json={"adapter": fusion["adapter_id"]}
        ).status_code
        == 200
    )
    # a fusion whose recorded score is below its best member's (as a cold start can be) is refused ...
    with api.registry.tx() as s:
        from registry_db.models import Adapter

        row = s.get(Adapter, fusion["adapter_id"])
        row.metrics = {**row.metrics, "comparison": {**cmp, "fusion": cmp["best_member"]["score"] - 0.1}}
    r = api.client.put("/v1/adapters/aliases/sentiment/prod2", headers=api.h(), json={"adapter": fusion["adapter_id"]})
    assert r.status_code == 409 and r.json()["type"].endswith("worse-than-member") and "force" in r.json()["detail"]
    # ... unless forced
    r = api.client.put(
        "/v1/adapters/aliases/sentiment/prod2", headers=api.h(), json={"adapter": fusion["adapter_id"], "force": True}
    )
    assert r.status_code == 200 and r.json()["adapter_id"] == fusion["adapter_id"]


def test_adapterctl_shows_a_fusions_comparison_and_keeps_the_alias_guard(api, adapterctl, capsys):
    client_cli = adapterctl
    ids = api.task_with_data()
    a, b = api.train_adapter(ids), api.train_adapter(ids, name="second")
    body = {"task": "sentiment", "adapters": [a, b], "train_dataset": ids["train"], "hyperparameters": HP}
    r = api.client.post("/v1/fusions", headers=api.h(), json={**body, "validation_dataset": ids["validation"]})
    fusion = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()["result"]
    cmp, att = fusion["comparison"], fusion["mean_attention"]
    assert client_cli.main(["--key", ADMIN, "adapters", "show", fusion["adapter_id"]]) == 0
    shown = capsys.readouterr().err.splitlines()
    for mid in (a, b):  # each member's validation score and mean attention, as the job measured them
        line = next(x for x in shown if x.startswith(mid))
        assert line.split()[1:3] == [f"{cmp['members'][mid]:.4f}", f"{att[mid]:.3f}"]
    assert (cmp["best_member"]["id"] + " ") in next(x for x in shown if x.endswith("<- best member"))
    delta = cmp["fusion"] - cmp["best_member"]["score"]
    assert f"fusion minus best member: {delta:+.4f} (at least its best member" in shown[-1]
    # the guard holds from the CLI too: a fusion recorded below its best member needs --force
    with api.registry.tx() as s:
        from registry_db.models import Adapter

        row = s.get(Adapter, fusion["adapter_id"])
        row.metrics = {**row.metrics, "comparison": {**cmp, "fusion": cmp["best_member"]["score"] - 0.1}}
    with pytest.raises(SystemExit, match="409.*force"):
        client_cli.main(["--key", ADMIN, "adapters", "alias", "sentiment", "prod", fusion["adapter_id"]])
    assert (
        client_cli.main(["--key", ADMIN, "adapters", "alias", "sentiment", "prod", fusion["adapter_id"], "--force"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["adapter_id"] == fusion["adapter_id"]
