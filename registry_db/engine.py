"""Engine and session factory. `COMPOSER_DATABASE_URL` selects the database.

The default is SQLite in the data directory (`COMPOSER_DATA_DIR`, default `./data`), with
WAL mode, a busy timeout and foreign keys on. PostgreSQL goes through psycopg 3
(`postgresql+psycopg://...`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

POOL_SIZE = 20


def data_dir() -> Path:
    return Path(os.environ.get("COMPOSER_DATA_DIR", "data")).resolve()


def database_url() -> str:
    url = os.environ.get("COMPOSER_DATABASE_URL")
    if url:
        return url
    d = data_dir()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'registry.db'}"


def make_engine(url: str | None = None) -> Engine:
    url = url or database_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # An API process serves requests from up to 40 threads: a pool this size keeps their connections
    # open instead of opening and closing an overflow connection per request under load.
    in_memory = url.startswith("sqlite") and (":memory:" in url or "///" not in url or url.endswith("///"))
    pool = {} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back everything on any exception."""
    with factory() as session, session.begin():
        yield session
