"""Every registry test runs twice: on SQLite and on a real PostgreSQL (COMPOSER_TEST_POSTGRES_URL; the
fresh_pg_database fixture is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from registry_db.blobs import DatabaseBlobStore, LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("fresh_pg_database")


@pytest.fixture()
def registry(db_url, tmp_path):
    upgrade(db_url)
    engine = make_engine(db_url)
    reg = Registry(engine, LocalBlobStore(tmp_path / "blobs"))
    yield reg
    reg.close()


@pytest.fixture()
def db_blob_registry(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    reg = Registry(engine, DatabaseBlobStore(engine))
    yield reg
    reg.close()
