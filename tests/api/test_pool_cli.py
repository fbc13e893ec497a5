"""`adapterctl pool train` against the API: one ST-A per built pool task through the service's jobs,
registered with validation metrics; a rerun skips what is done and uploads nothing twice."""

from __future__ import annotations

import json

from composer.pool import build
from composer.pool.readers import Reader
from tests.api.conftest import ADMIN, HP
from tests.workers.fixtures import toy_rows


def test_pool_train_registers_one_adapter_per_task_and_a_rerun_skips(api, adapterctl, tmp_path, monkeypatch, capsys):
    for name, seed in (("toy_a", 1), ("toy_b", 2)):
        rows = [(r["text"] + f" sample {i}", r["label"]) for i, r in enumerate(toy_rows(120, seed))]
        monkeypatch.setitem(build.READERS, name, Reader("x", lambda rows=rows: rows, "toy"))
        build.build_task(name, out=tmp_path)
    argv = ["--key", ADMIN, "pool", "train", "--dir", str(tmp_path), "--base-model", "tiny-bert"]
    argv += ["--max-train", "40", "--max-validation", "10", "--hyperparameters", json.dumps(HP)]
    assert adapterctl.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in first] == ["toy_a", "toy_b"] and all(r["status"] == "succeeded" for r in first)
    for r in first:
        a = api.client.get(f"/v1/adapters/{r['adapter_id']}", headers=api.h()).json()
        assert a["name"] == f"pool-{r['task']}" and a["status"] == "ready" and "accuracy" in a["metrics"]
        ds = api.client.get(f"/v1/tasks/{r['task']}/datasets", headers=api.h()).json()["items"]
        assert sorted((d["split"], d["row_count"]) for d in ds) == [("train", 40), ("validation", 10)]
    jobs_before = len(api.outbox)
    assert adapterctl.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r.get("skipped") for r in again] == [True, True] and len(api.outbox) == jobs_before
    assert [r["adapter_id"] for r in again] == [r["adapter_id"] for r in first]
