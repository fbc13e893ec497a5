"""Every registry test runs twice: on SQLite and on a real PostgreSQL (COMPOSER_TEST_POSTGRES_URL)."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from registry_db.blobs import DatabaseBlobStore, LocalBlobStore
from registry_db.engine import make_engine
from registry_db.migrate import upgrade
from registry_db.registry import Registry


def postgres_url() -> str | None:
    url = os.environ.get("COMPOSER_TEST_POSTGRES_URL")
    if not url:
        msg = "POSTGRESQL NOT TESTED: set COMPOSER_TEST_POSTGRES_URL (scripts/test.sh starts a server)"
        if os.environ.get("COMPOSER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return url


@pytest.fixture()
def fresh_pg_database():
    """A new, empty PostgreSQL database per test; dropped afterwards."""
    admin_url = make_url(postgres_url())
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
