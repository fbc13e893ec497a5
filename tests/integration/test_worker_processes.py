"""Real `celery worker` processes against real brokers (redis-server, and the embedded SQLite transport).

Covered: a job end to end, kill -9 mid-training and resume from the checkpoint, cancel
(queued and running), duplicate delivery, and a broker restart that loses the queue.
"""

from __future__ import annotations

import time

import torch
from safetensors.torch import load as st_load
from sqlalchemy import select

from registry_db.models import Adapter
from service.submit import submit_job
from tests.integration.procs import wait_for
from tests.workers.fixtures import adapter_spec

LONG = {"epochs": 12, "batch_size": 2, "checkpoint_every_steps": 10}  # 384 steps on the tiny model


def adapters_of(stack, job_id: str) -> list[Adapter]:
    with stack.world.registry.tx() as s:
        return list(s.scalars(select(Adapter).where(Adapter.job_id == job_id)).all())


def weights(stack, adapter: Adapter) -> dict[str, torch.Tensor]:
    return st_load(stack.world.registry.blobs.get(adapter.blob_sha256))


def test_a_job_runs_end_to_end_on_a_real_worker(stack):
    stack.start_worker()
    job, _ = submit_job(stack.world.registry, stack.world.owner, "adapter", adapter_spec(stack.world), send=stack.send)
    done = stack.wait_status(job.id, ("succeeded", "failed"))
    assert done.status == "succeeded", done.error
    types = [e.type for e in stack.events(job.id)]
    assert types.count("progress") >= 1 and "metric" in types
    assert len(adapters_of(stack, job.id)) == 1


def test_kill_9_mid_training_resumes_from_the_checkpoint(stack):
    w = stack.world
    reference, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w, **LONG), "ref", send=stack.send)
    first = stack.start_worker("w1")
    stack.wait_status(reference.id, ("succeeded",), timeout=180)
    job, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w, **LONG), "victim", send=stack.send)
    wait_for(lambda: sum(e.type == "checkpoint" for e in stack.events(job.id)) >= 2, 120, "two checkpoints", 0.02)
    first.kill()
    assert stack.job(job.id).status == "running"  # left behind by the dead worker
    stack.start_worker("w2")  # its reconcile sweep finds the stale heartbeat and re-enqueues the job
    done = stack.wait_status(job.id, ("succeeded", "failed"), timeout=180)
    assert done.status == "succeeded", done.error
    events = stack.events(job.id)
    resumed = [e.payload for e in events if e.type == "resumed"]
    assert resumed and resumed[0]["from_step"] >= 10 and done.attempts == 2
    assert "requeued" in [e.type for e in events]
    assert done.result["resumed_from"] == resumed[0]["from_step"]
    (ours,) = adapters_of(stack, job.id)  # exactly one adapter row
    (ref,) = adapters_of(stack, reference.id)
    a, b = weights(stack, ours), weights(stack, ref)
    assert a.keys() == b.keys()
    for k in a:  # documented tolerance: exact (same seed, same data order, RNG restored from the checkpoint)
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_cancel_a_queued_job_never_starts_it(stack):
    w = stack.world
    job, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w), send=stack.send)  # no worker yet
    from registry_db.repo import jobs

    with w.registry.tx() as s:
        assert jobs.request_cancel(s, job.id).status == "cancelled"
    stack.start_worker()
    time.sleep(3)  # the message is delivered and must be dropped
    assert stack.job(job.id).status == "cancelled"
    assert "running" not in [e.payload.get("status") for e in stack.events(job.id)]
    assert adapters_of(stack, job.id) == []


def test_cancel_a_running_job_stops_it(stack):
    w = stack.world
    stack.start_worker()
    job, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w, epochs=200), send=stack.send)
    wait_for(lambda: any(e.type == "progress" for e in stack.events(job.id)), 60, "progress")
    from registry_db.repo import jobs

    with w.registry.tx() as s:
        jobs.request_cancel(s, job.id)
    done = stack.wait_status(job.id, ("cancelled", "succeeded", "failed"), timeout=60)
    assert done.status == "cancelled"
    types = [e.type for e in stack.events(job.id)]
    assert "progress" in types and types[-1] == "status"
    assert adapters_of(stack, job.id) == []


def test_duplicate_delivery_never_trains_twice(stack):
    w = stack.world
    stack.start_worker("w1")
    stack.start_worker("w2")
    job, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w, **LONG), send=stack.send)
    stack.send(job.id, "adapter")  # at-least-once delivery: the same message again, while the first runs
    done = stack.wait_status(job.id, ("succeeded", "failed"), timeout=180)
    assert done.status == "succeeded"
    time.sleep(2)
    running = [e for e in stack.events(job.id) if e.payload.get("status") == "running"]
    assert len(running) == 1 and done.attempts == 1
    assert len(adapters_of(stack, job.id)) == 1


def test_redis_restart_that_loses_the_queue_still_completes_the_job(redis_stack):
    st = redis_stack
    w = st.world
    st.redis.stop()  # the broker goes away
    job, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w), send=st.send)
    assert "enqueue_failed" in [e.type for e in st.events(job.id)]
    st.redis.start()  # back, empty
    st.start_worker()  # the sweep re-enqueues the job the broker never got
    done = st.wait_status(job.id, ("succeeded", "failed"), timeout=120)
    assert done.status == "succeeded"
    assert "reenqueued" in [e.type for e in st.events(job.id)]
    assert len(adapters_of(st, job.id)) == 1


def test_worker_survives_a_redis_restart_while_a_job_is_queued(redis_stack):
    st = redis_stack
    w = st.world
    st.start_worker()
    st.redis.stop()
    job, _ = submit_job(w.registry, w.owner, "adapter", adapter_spec(w), send=st.send)
    time.sleep(2)
    st.redis.start()
    done = st.wait_status(job.id, ("succeeded", "failed"), timeout=120)
    assert done.status == "succeeded"


def test_multitask_then_fusion_jobs_on_a_real_worker(tmp_path, tiny_bert_dir):
    """Stage one (MT-A) and stage two (fusion over the MT-A members) through a real worker, embedded broker."""
    from tests.integration.conftest import make_stack

    st = make_stack(tmp_path, tiny_bert_dir, f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    try:
        w = st.world
        hp = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}
        st.start_worker()
        mt_spec = {
            "base_model": w.base,
            "hyperparameters": hp,
            "adapter": {"reduction_factor": 4},
            "tasks": [
                {"task": "sentiment", "train_dataset": w.train, "validation_dataset": w.validation},
                {"task": "sentiment2", "train_dataset": w.validation},
            ],
        }
        from registry_db.repo import catalog
        from service.catalog import upload_dataset
        from tests.workers.fixtures import jsonl, toy_rows

        with w.registry.tx() as s:
            catalog.create_task(s, w.owner, "sentiment2", "classification", ["neg", "pos"])
        second = upload_dataset(w.registry, w.owner, "sentiment2", "train", jsonl(toy_rows(16, 9)))[0]
        mt_spec["tasks"][1]["train_dataset"] = second.id
        mt, _ = submit_job(w.registry, w.owner, "multitask", mt_spec, send=st.send)
        done = st.wait_status(mt.id, ("succeeded", "failed"))
        assert done.status == "succeeded", done.error
        members = done.result["adapter_ids"]
        fusion_spec = {
            "task": "sentiment",
            "adapters": members,
            "train_dataset": w.train,
            "validation_dataset": w.validation,
            "hyperparameters": hp,
        }
        fu, _ = submit_job(w.registry, w.owner, "fusion", fusion_spec, send=st.send)
        done = st.wait_status(fu.id, ("succeeded", "failed"))
        assert done.status == "succeeded", done.error
        assert set(done.result["mean_attention"]) == set(members)
    finally:
        for worker in st.workers:
            worker.stop()
        st.world.registry.close()
