"""Submit-time validation and the job runner, in-process (the real-process tests are in tests/integration)."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from registry_db.errors import InvalidInput, NotFound
from registry_db.models import Adapter, Job
from registry_db.repo import catalog, jobs
from service.jobs import JOB_TYPES
from service.settings import Settings
from service.submit import submit_job
from tests.workers.fixtures import adapter_spec, jsonl, make_world, toy_rows
from workers.runner import run

FAST = Settings(heartbeat_interval=0.2, stale_after=2, checkpoint_every_steps=5, progress_every_seconds=0)


class Outbox:
    def __init__(self, up: bool = True):
        self.sent: list[str] = []
        self.up = up

    def __call__(self, job_id: str, job_type: str) -> bool:
        if self.up:
            self.sent.append(job_id)
        return self.up


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request, tmp_path, tiny_bert_dir):
    db = request.getfixturevalue("fresh_pg_database") if request.param == "postgresql" else None
    w = make_world(tmp_path, tiny_bert_dir, db_url=db)
    yield w
    w.registry.close()


def count(reg, model) -> int:
    with reg.tx() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"train_dataset": "ds_missing"}, NotFound),
        ({"base_model": "bm_missing"}, NotFound),
        ({"hyperparameters": {"learning_rate": 0}}, InvalidInput),
        ({"hyperparameters": {"learning_rate": -0.1}}, InvalidInput),
        ({"hyperparameters": {"epochs": 0}}, InvalidInput),
        ({"preset": "nope"}, ValidationError),
        ({"preset": "lora", "adapter": {"r": 0}}, InvalidInput),
        ({"preset": "lora", "adapter": {"target_modules": ["gate_proj"]}}, InvalidInput),
        ({"preset": "lora", "adapter": {"reduction_factor": 4}}, InvalidInput),
        ({"adapter": {"reduction_factor": -1}}, InvalidInput),
        ({"surprise": 1}, ValidationError),
    ],
)
def test_bad_specs_fail_at_submit_before_anything_is_queued(world, change, error):
    outbox = Outbox()
    with pytest.raises(error):
        submit_job(world.registry, world.owner, "adapter", {**adapter_spec(world), **change}, send=outbox)
    assert outbox.sent == [] and count(world.registry, Job) == 0


def test_dataset_of_another_task_is_refused(world):
    with world.registry.tx() as s:
        catalog.create_task(s, world.owner, "topic", "classification", ["neg", "pos"])
    from service.catalog import upload_dataset

    other, _ = upload_dataset(world.registry, world.owner, "topic", "train", jsonl(toy_rows(8, 5)))
    with pytest.raises(InvalidInput, match="another task"):
        submit_job(
            world.registry, world.owner, "adapter", {**adapter_spec(world), "train_dataset": other.id}, send=Outbox()
        )


def test_idempotent_submit_returns_the_same_job(world):
    outbox = Outbox()
    a, created_a = submit_job(world.registry, world.owner, "adapter", adapter_spec(world), "key-1", send=outbox)
    b, created_b = submit_job(world.registry, world.owner, "adapter", adapter_spec(world), "key-1", send=outbox)
    assert (created_a, created_b) == (True, False) and a.id == b.id
    assert outbox.sent == [a.id] and count(world.registry, Job) == 1


def test_broker_down_at_submit_keeps_the_job_queued(world):
    job, _ = submit_job(world.registry, world.owner, "adapter", adapter_spec(world), send=Outbox(up=False))
    with world.registry.tx() as s:
        assert jobs.get_job(s, job.id).status == "queued"
        assert [e.type for e in jobs.list_events(s, job.id)] == ["status", "enqueue_failed"]


def test_run_trains_registers_once_and_streams_events(world):
    job, _ = submit_job(world.registry, world.owner, "adapter", adapter_spec(world), send=Outbox())
    assert run(world.registry, FAST, job.id, JOB_TYPES) == "succeeded"
    assert run(world.registry, FAST, job.id, JOB_TYPES) == "skipped"  # a duplicate delivery does nothing
    with world.registry.tx() as s:
        done = jobs.get_job(s, job.id)
        types = [e.type for e in jobs.list_events(s, job.id)]
        adapter = s.scalars(select(Adapter)).one()
    assert done.status == "succeeded" and done.result["adapter_id"] == adapter.id
    assert adapter.job_id == job.id and adapter.version == 1 and adapter.param_count > 0
    assert {"progress", "metric", "checkpoint"} <= set(types)
    assert types[0] == "status" and types[-1] == "status"
    assert world.registry.blobs.get(adapter.blob_sha256)  # verified read of the stored weights


def test_a_failure_is_recorded_with_a_structured_error_and_traceback(world):
    job, _ = submit_job(world.registry, world.owner, "adapter", adapter_spec(world), send=Outbox())
    with world.registry.tx() as s:
        sha = catalog.get_dataset(s, world.train).sha256
    world.registry.blobs.path(sha).write_bytes(b"tampered")
    assert run(world.registry, FAST, job.id, JOB_TYPES) == "failed"
    with world.registry.tx() as s:
        failed = jobs.get_job(s, job.id)
        err = [e for e in jobs.list_events(s, job.id) if e.type == "error"][0]
    assert failed.error["type"] == "invalid_input" and "corrupted" in failed.error["message"]
    assert "Traceback" in err.payload["traceback"]
    assert count(world.registry, Adapter) == 0


def test_cancel_stops_a_running_job_at_a_step_boundary(world):
    spec = adapter_spec(world, epochs=200)
    job, _ = submit_job(world.registry, world.owner, "adapter", spec, send=Outbox())
    outcome: list[str] = []
    t = threading.Thread(target=lambda: outcome.append(run(world.registry, FAST, job.id, JOB_TYPES)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        with world.registry.tx() as s:
            if any(e.type == "progress" for e in jobs.list_events(s, job.id)):
                jobs.request_cancel(s, job.id)
                break
        time.sleep(0.05)
    t.join(60)
    assert outcome == ["cancelled"]
    with world.registry.tx() as s:
        final = jobs.get_job(s, job.id)
        types = [e.type for e in jobs.list_events(s, job.id)]
    assert final.status == "cancelled" and "progress" in types and "cancel_requested" in types
    assert count(world.registry, Adapter) == 0


@pytest.mark.parametrize("kept_after", [0, 1, 10])  # 10: what remains is what running kept (1)
def test_checkpoints_are_pruned_while_running_and_when_the_job_ends(world, kept_after):
    from registry_db.models import Checkpoint

    settings = FAST.model_copy(update={"checkpoints_kept_after": kept_after})
    job, _ = submit_job(world.registry, world.owner, "adapter", adapter_spec(world, epochs=3), send=Outbox())
    assert run(world.registry, settings, job.id, JOB_TYPES) == "succeeded"
    with world.registry.tx() as s:
        saved = [e.payload for e in jobs.list_events(s, job.id) if e.type == "checkpoint"]
        rows = s.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id)).all()
        kept = [(c.step, c.blob_sha256) for c in rows]
    assert len(saved) >= 3  # several checkpoints were written ...
    newest = max(saved, key=lambda p: p["step"])
    assert kept == ([(newest["step"], newest["sha256"])] if kept_after else [])  # ... and only these rows remain
    removed = set(world.registry.gc(min_age_seconds=-1))
    assert {p["sha256"] for p in saved} - {sha for _, sha in kept} <= removed
    assert all(world.registry.blobs.exists(sha) for _, sha in kept)
