"""Property-based fuzzing of the live OpenAPI schema: no response is a 500, every error is problem+json."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from registry_db.blobs import LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry
from registry_db.repo import catalog, keys
from service.catalog import register_base_model
from service.settings import Settings

KEY = "fuzz-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'registry.db'}"
    upgrade(url)
    reg = Registry(make_engine(url), LocalBlobStore(tmp / "blobs"))
    with reg.tx() as s:
        owner = keys.get_or_create_owner(s, "admin")
        keys.create_key(s, owner.id, ["admin", "train", "read"], secret=KEY)
        catalog.create_task(s, owner.id, "sentiment", "classification", ["neg", "pos"])
    register_base_model(reg, tiny_bert_dir, name="tiny")
    settings_ = Settings(data_dir=tmp, register_packaged_encoder=False, max_upload_mb=0.05)
    return create_app(settings_, registry=reg, send=lambda job_id, job_type: True)


def test_no_500_and_problem_json_errors(fuzz_app):
    """Every operation of the live schema, with a bounded number of generated requests each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 25
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):  # type: ignore[no-untyped-def]
            response = case.call(headers={"Authorization": f"Bearer {KEY}"})
            where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                assert response.headers["content-type"][0].startswith("application/problem+json"), where

        check()


A_KEY, B_KEY = "owner-a-admin-key-0123456789", "owner-b-admin-key-0123456789"


@pytest.fixture(scope="module")
def two_owners(tmp_path_factory, tiny_bert_dir):
    """Owner A holds one of everything (task, dataset, adapter, alias, ensemble, job, key); owner B holds an
    admin key and nothing else."""
    from composer import adapter_artifact as artifacts
    from composer.base import load_base
    from composer.encoder import AdaptedEncoder
    from composer.heads import HeadConfig
    from composer.presets import preset
    from registry_db.repo import adapters, jobs
    from service import artifact_store
    from service.catalog import upload_dataset
    from tests.workers.fixtures import jsonl, toy_rows

    tmp = tmp_path_factory.mktemp("fuzz2")
    url = f"sqlite:///{tmp / 'registry.db'}"
    upgrade(url)
    reg = Registry(make_engine(url), LocalBlobStore(tmp / "blobs"))
    base, _ = register_base_model(reg, tiny_bert_dir, name="tiny")
    model = AdaptedEncoder(load_base(tiny_bert_dir))
    model.add_adapter("a", preset("seq_bn", reduction_factor=4))
    model.add_head("a", HeadConfig(num_labels=2))
    art = artifacts.extract(model, "a", head="a", labels=["neg", "pos"])
    w, c = artifact_store.store(reg, art)
    with reg.tx() as s:
        a = keys.get_or_create_owner(s, "a").id
        b = keys.get_or_create_owner(s, "b").id
        a_key, _ = keys.create_key(s, a, ["admin", "train", "read"], secret=A_KEY)
        keys.create_key(s, b, ["admin", "train", "read"], secret=B_KEY)
        task = catalog.create_task(s, a, "sentiment", "classification", ["neg", "pos"])
    ds, _ = upload_dataset(reg, a, "sentiment", "train", jsonl(toy_rows(8)), "t.jsonl")
    with reg.tx() as s:
        row = adapters.register_adapter(
            s,
            owner_id=a,
            task_id=task.id,
            base_model_id=base.id,
            name="a",
            blob_sha256=w,
            config_sha256=c,
            **artifact_store.registration(art),
        )
        adapters.set_alias(s, a, task.id, "production", row.id)
        ens = adapters.create_set(s, owner_id=a, kind="ensemble", name="e", adapter_ids=[row.id], task_id=task.id)
        job = jobs.create_job(s, a, "adapter", {"task": task.id})
    ids = {
        "ref": row.id,
        "adapter": row.id,
        "adapters": [row.id, row.id],
        "prompts": [row.id],
        "key_id": a_key.id,
        "dataset_id": ds.id,
        "dataset": ds.id,
        "train_dataset": ds.id,
        "validation_dataset": ds.id,
        "job_id": job.id,
        "ensemble_id": ens.id,
        "name": "sentiment",
        "task": "sentiment",
        "alias": "production",
    }
    app = create_app(
        Settings(data_dir=tmp, register_packaged_encoder=False, max_upload_mb=0.05),
        registry=reg,
        send=lambda job_id, job_type: True,
    )
    return app, reg, ids


def test_another_owner_can_neither_read_nor_write_and_nothing_is_a_500(two_owners):
    """Every operation fuzzed with owner B's key, its path and body ids pointed at owner A's objects."""
    app, reg, ids = two_owners
    secrets = {v for k, v in ids.items() if isinstance(v, str) and k not in ("name", "task", "alias")}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for op in [r.ok() for r in schema.get_all_operations()]:

        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):  # type: ignore[no-untyped-def]
            aimed = False
            for name in list(case.path_parameters or {}):
                if name in ids:
                    case.path_parameters[name], aimed = ids[name], True
            if isinstance(case.body, dict):
                for name in case.body:
                    if name in ids:
                        case.body[name], aimed = ids[name], True
            response = case.call(headers={"Authorization": f"Bearer {B_KEY}"})
            where = f"{case.method} {case.formatted_path} {case.body!r:.200} -> {response.status_code}: {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code < 300:
                assert not any(s in response.text for s in secrets), where  # none of A's objects leaks to B
                assert not (aimed and case.path_parameters and set(case.path_parameters.values()) & secrets), where

        check()
    with reg.tx() as s:  # and none of A's objects was changed by B
        from registry_db.repo import adapters, jobs
        from registry_db.repo import keys as key_repo

        assert adapters.get_adapter(s, ids["adapter"]).status == "ready"
        job = jobs.get_job(s, ids["job_id"])
        assert job.status == "queued" and not job.cancel_requested
        assert all(
            k.revoked_at is None for k in key_repo.list_keys(s, adapters.get_adapter(s, ids["adapter"]).owner_id)
        )
        assert (
            adapters.resolve_adapter(s, adapters.get_adapter(s, ids["adapter"]).owner_id, "sentiment@production").id
            == ids["adapter"]
        )
        assert adapters.set_members(s, ids["ensemble_id"])[0].id == ids["adapter"]
