"""`evaluate` jobs score a module of any kind through the serving path: the stored accuracy equals the
accuracy of /v1/predict's labels on the same rows (for an ST-A, a fusion and a soft prompt)."""

from __future__ import annotations

from tests.api.conftest import HP
from tests.workers.fixtures import toy_rows


def _job(api, body: dict) -> dict:  # type: ignore[no-untyped-def]
    r = api.client.post("/v1/jobs", json=body, headers=api.h())
    assert r.status_code == 202, r.text
    job = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()
    assert job["status"] == "succeeded", job
    return job["result"]


def test_evaluate_scores_every_kind_as_it_serves(api):
    ids = api.task_with_data()
    a, b = api.train_adapter(ids, name="a"), api.train_adapter(ids, name="b", adapter={"reduction_factor": 2})
    r = api.client.post(
        "/v1/fusions",
        headers=api.h(),
        json={"task": "sentiment", "members": [a, b], "train_dataset": ids["train"], "hyperparameters": HP},
    )
    fusion = api.client.get(f"/v1/jobs/{r.json()['id']}", headers=api.h()).json()["result"]["adapter_id"]
    common = {"task": "sentiment", "base_model": api.base_id, "train_dataset": ids["train"]}
    prompts = _job(api, {**common, "type": "prompts", "k": 2, "prompt": {"length": 4}, "hyperparameters": HP})
    prompt = api.client.get(f"/v1/ensembles/{prompts['ensemble_id']}", headers=api.h()).json()["prompts"][0]
    rows = toy_rows(16, 1)  # the validation set task_with_data uploaded
    for module in (a, fusion, prompt):
        result = _job(api, {"type": "evaluate", "adapter": module, "dataset": ids["validation"]})
        served = api.client.post(
            "/v1/predict", headers=api.h(), json={"adapter": module, "inputs": [{"text": r["text"]} for r in rows]}
        ).json()["outputs"]
        want = sum(o["label"] == r["label"] for o, r in zip(served, rows, strict=True)) / len(rows)
        assert abs(result["metrics"]["accuracy"] - want) < 1e-6, (module, result, want)
        info = api.client.get(f"/v1/adapters/{module}", headers=api.h()).json()
        assert info["metrics"][f"eval/validation/{ids['validation']}"] == result["metrics"]
