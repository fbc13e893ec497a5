"""`multitask` and `fusion` jobs in-process: registration, lineage, pruning, and submit-time refusals."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from registry_db.errors import InvalidInput, NotFound
from registry_db.models import Adapter
from registry_db.repo import adapters, catalog, jobs
from service.catalog import register_base_model, upload_dataset
from service.jobs import JOB_TYPES
from service.submit import submit_job
from tests.workers.fixtures import adapter_spec, jsonl, make_world, toy_rows
from tests.workers.test_submit_and_runner import FAST, Outbox
from workers.runner import run

HP = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path, tiny_bert_dir):
    db = request.getfixturevalue("fresh_pg_database") if request.param == "postgresql" else None
    w = make_world(tmp_path, tiny_bert_dir, db_url=db)
    with w.registry.tx() as s:
        catalog.create_task(s, w.owner, "flip", "classification", ["neg", "pos"])
    flipped = [{**r, "label": "neg" if r["label"] == "pos" else "pos"} for r in toy_rows(32, 7)]
    w.flip_train = upload_dataset(w.registry, w.owner, "flip", "train", jsonl(flipped))[0].id  # type: ignore[attr-defined]
    yield w
    w.registry.close()


def submit_and_run(w, job_type, spec):
    job, _ = submit_job(w.registry, w.owner, job_type, spec, send=Outbox())
    assert run(w.registry, FAST, job.id, JOB_TYPES) == "succeeded", jobs_error(w, job.id)
    with w.registry.tx() as s:
        return jobs.get_job(s, job.id)


def jobs_error(w, job_id):
    with w.registry.tx() as s:
        return jobs.get_job(s, job_id).error


def two_adapters(w) -> list[str]:
    a = submit_and_run(w, "adapter", adapter_spec(w)).result["adapter_id"]
    b = submit_and_run(w, "adapter", {**adapter_spec(w), "name": "second"}).result["adapter_id"]
    return [a, b]


def fusion_spec(w, ids, **kw):
    return {
        "task": w.task,
        "adapters": ids,
        "train_dataset": w.train,
        "validation_dataset": w.validation,
        "hyperparameters": HP,
        **kw,
    }


def test_multitask_job_registers_a_derived_base_and_its_adapters(world):
    w = world
    spec = {
        "base_model": w.base,
        "adapter": {"reduction_factor": 4},
        "hyperparameters": HP,
        "temperature": 2,
        "tasks": [
            {"task": "sentiment", "train_dataset": w.train, "validation_dataset": w.validation},
            {"task": "flip", "train_dataset": w.flip_train},
        ],
    }
    done = submit_and_run(w, "multitask", spec)
    derived_id = done.result["base_model_id"]
    with w.registry.tx() as s:
        members = adapters.set_members(s, done.result["set_id"])
        assert [m.id for m in members] == done.result["adapter_ids"]
        assert {m.kind for m in members} == {"mt_a"} and len(members) == 2
        assert {catalog.get_task(s, w.owner, m.task_id).name for m in members} == {"sentiment", "flip"}
        derived, parent = catalog.get_base_model(s, derived_id), catalog.get_base_model(s, w.base)
        # its own identity, lineage to the parent and the job, weights stored once, owned by the job's owner
        assert derived.identity != parent.identity and derived.config_hash == parent.config_hash
        assert (derived.parent_id, derived.job_id, derived.owner_id) == (w.base, done.id, w.owner)
        assert {m.base_model_id for m in members} == {derived_id}
        with pytest.raises(NotFound):
            catalog.get_base_model(s, derived_id, owner_id="someone-else")
    assert w.registry.blobs.exists(derived.weights_sha256)
    assert derived.weights_sha256 not in w.registry.gc(min_age_seconds=0)  # the GC keeps a derived base
    # the stored weights reproduce the registered identity (load_registered_base checks it)
    from service.catalog import load_registered_base

    assert load_registered_base(derived, "cpu", w.registry).identity.fingerprint == derived.identity
    # an MT-A and an ST-A of the parent base cannot be fused; two MT-As of the derived base can
    st_a = submit_and_run(w, "adapter", adapter_spec(w)).result["adapter_id"]
    with pytest.raises(InvalidInput, match="different base"):
        submit_job(w.registry, w.owner, "fusion", fusion_spec(w, [members[0].id, st_a]), send=Outbox())
    fused = submit_and_run(w, "fusion", fusion_spec(w, [m.id for m in members]))
    with w.registry.tx() as s:
        assert adapters.get_adapter(s, fused.result["adapter_id"]).base_model_id == derived_id


def test_fusion_job_registers_lineage_attention_and_a_pruned_fusion(world):
    w = world
    ids = two_adapters(w)
    done = submit_and_run(w, "fusion", fusion_spec(w, ids, prune_threshold=0.01, warm_start=False))  # uniform start
    with w.registry.tx() as s:
        fusion = adapters.get_adapter(s, done.result["adapter_id"])
        assert fusion.kind == "fusion" and [m.id for m in adapters.fusion_members(s, fusion.id)] == ids
    att = done.result["mean_attention"]
    assert set(att) == set(ids) and sum(att.values()) == pytest.approx(1.0, abs=1e-3)
    layers = done.result["attention_per_layer"]  # the dashboard's heat map: its layers average to the mean
    assert layers["members"] == ids and len(layers["layers"]) >= 1
    for j, mid in enumerate(ids):
        per = [w[j] for w in layers["layers"].values()]
        assert sum(per) / len(per) == pytest.approx(att[mid], abs=1e-3)
    assert fusion.metrics["attention_per_layer"] == layers
    pruned = done.result["pruned"]
    assert pruned["members"] == ids and "relative_cost" in pruned  # both above a 1% threshold: all kept
    assert "pruned_adapter_id" in done.result


def test_fusion_submit_refusals(world, tmp_path, other_bert_dir):
    w = world
    ids = two_adapters(w)
    send = Outbox()

    def refused(spec, match):
        with pytest.raises(InvalidInput, match=match):
            submit_job(w.registry, w.owner, "fusion", spec, send=send)

    refused(fusion_spec(w, [ids[0], ids[0]]), "twice")
    with pytest.raises(ValueError, match="at least 2"):
        submit_job(w.registry, w.owner, "fusion", fusion_spec(w, ids[:1]), send=send)
    with w.registry.tx() as s:
        adapters.archive_adapter(s, ids[1], w.owner)
    refused(fusion_spec(w, ids), "not ready")
    with w.registry.tx() as s:
        s.get(Adapter, ids[1]).status = "ready"
    other_base, _ = register_base_model(w.registry, other_bert_dir)
    houlsby = submit_and_run(w, "adapter", {**adapter_spec(w), "preset": "double_seq_bn", "name": "h"})
    refused(fusion_spec(w, [ids[0], houlsby.result["adapter_id"]]), "placements")
    elsewhere = submit_and_run(w, "adapter", {**adapter_spec(w), "base_model": other_base.id, "name": "o"})
    refused(fusion_spec(w, [ids[0], elsewhere.result["adapter_id"]]), "different base")
    refused(fusion_spec(w, ids, fusion={"temperature": 0}), "temperature")
    assert send.sent == []
    with w.registry.tx() as s:
        assert len(s.scalars(select(Adapter).where(Adapter.kind == "fusion")).all()) == 0


def test_evaluate_job_stores_metrics_on_the_adapter(world):
    w = world
    adapter_id = submit_and_run(w, "adapter", adapter_spec(w)).result["adapter_id"]
    done = submit_and_run(w, "evaluate", {"adapter": adapter_id, "dataset": w.validation})
    with w.registry.tx() as s:
        row = adapters.get_adapter(s, adapter_id)
    assert row.metrics[f"eval/validation/{w.validation}"] == done.result["metrics"]


def test_prompts_job_registers_k_prompts_and_an_ensemble(world):
    w = world
    spec = {
        "task": w.task,
        "base_model": w.base,
        "train_dataset": w.train,
        "validation_dataset": w.validation,
        "k": 3,
        "prompt": {"length": 4},
        "voting": "weighted",
        "hyperparameters": {"learning_rate": 3e-2, "epochs": 2, "batch_size": 8, "patience": 0},
    }
    done = submit_and_run(w, "prompts", spec)
    with w.registry.tx() as s:
        members = adapters.set_members(s, done.result["ensemble_id"])
        assert [m.id for m in members] == done.result["adapter_ids"] and len(members) == 3
        assert {m.kind for m in members} == {"soft_prompt"}
        assert all("accuracy" in m.metrics for m in members)  # validation scores, for weighted voting
    with pytest.raises(InvalidInput, match="validation dataset"):
        submit_job(w.registry, w.owner, "prompts", {**spec, "validation_dataset": None}, send=Outbox())
    with pytest.raises(InvalidInput, match="prompt length"):
        submit_job(w.registry, w.owner, "prompts", {**spec, "prompt": {"length": 0}}, send=Outbox())


def test_a_fusion_over_the_targets_own_adapter_starts_from_it_and_is_compared_with_it(world):
    w = world
    ids = two_adapters(w)  # both are adapters of the target task, with its head
    done = submit_and_run(w, "fusion", fusion_spec(w, ids))
    cmp = done.result["comparison"]
    with w.registry.tx() as s:
        rows = {i: adapters.get_adapter(s, i) for i in ids}
        fusion = adapters.get_adapter(s, done.result["adapter_id"])
    # each member alone scores what it scored when it was trained (same validation set), and the fusion,
    # which started from the better one, is not below it
    for i in ids:
        assert cmp["members"][i] == pytest.approx(rows[i].metrics["accuracy"])
    assert cmp["best_member"]["score"] == max(cmp["members"].values())
    assert cmp["fusion"] >= cmp["best_member"]["score"] and cmp["winner"]
    assert fusion.metrics["comparison"] == cmp  # the adapter's page carries it too
    # asked to improve or fail: a learning rate that cannot move it fails the job, and registers nothing
    job, _ = submit_job(
        w.registry,
        w.owner,
        "fusion",
        fusion_spec(w, ids, require_improvement=True, hyperparameters={**HP, "learning_rate": 1e-12}),
        send=Outbox(),
    )
    assert run(w.registry, FAST, job.id, JOB_TYPES) == "failed"
    assert "did not improve on its start" in jobs_error(w, job.id)["message"]
    with w.registry.tx() as s:
        assert len(s.scalars(select(Adapter).where(Adapter.kind == "fusion")).all()) == 1


def test_without_a_learning_rate_the_fusion_job_chooses_one_on_validation(world):
    w = world
    ids = two_adapters(w)
    hp = {k: v for k, v in HP.items() if k != "learning_rate"}
    done = submit_and_run(w, "fusion", fusion_spec(w, ids, hyperparameters=hp))
    trials = done.result["lr_trials"]
    assert [t["learning_rate"] for t in trials] == [1e-3, 3e-4, 1e-4]
    best = max(trials, key=lambda t: t["accuracy"])
    assert (
        done.result["learning_rate"] == best["learning_rate"] and done.result["metrics"]["accuracy"] == best["accuracy"]
    )
    with w.registry.tx() as s:
        events = [e for e in jobs.list_events(s, done.id, 0) if e.type == "lr_trial"]
        assert [e.payload["learning_rate"] for e in events] == [1e-3, 3e-4, 1e-4]
        assert all(e.payload["seconds"] > 0 and e.payload["winner"] for e in events)
