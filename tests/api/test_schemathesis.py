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
from workers.catalog import register_base_model
from workers.settings import Settings

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
