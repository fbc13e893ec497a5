"""Engine and session factory for a database URL the caller gives (the service's settings resolve it).

SQLite gets WAL mode, a busy timeout and foreign keys on; PostgreSQL goes through psycopg 3
(`postgresql+psycopg://...`). `env_database_url` is for this package's own command line and Alembic,
which read `COMPOSER_DATABASE_URL` (default: SQLite in `COMPOSER_DATA_DIR`, `./data`) at their entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

POOL_SIZE = 20


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: a SQLite registry in the data directory (created)."""
    d = Path(data_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'registry.db'}"


def env_data_dir() -> Path:
    return Path(os.environ.get("COMPOSER_DATA_DIR", "data")).resolve()


def env_database_url() -> str:
    """For the registry's command line and Alembic only; the service passes its settings' URL."""
    return os.environ.get("COMPOSER_DATABASE_URL") or sqlite_url(env_data_dir())


def make_engine(url: str) -> Engine:
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
