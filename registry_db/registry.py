"""`Registry`: the engine, the session factory and the blob store, configured from the environment."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import Engine, select, union
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from registry_db.blobs import BlobStore, open_blob_store
from registry_db.engine import env_data_dir, env_database_url, make_engine, session_factory, transaction
from registry_db.errors import Conflict
from registry_db.models import Adapter, BaseModelRow, Checkpoint, Dataset

T = TypeVar("T")


class Registry:
    def __init__(self, engine: Engine, blobs: BlobStore):
        self.engine = engine
        self.sessions = session_factory(engine)
        self.blobs = blobs

    @classmethod
    def open(cls, database_url: str, blob_url: str) -> Registry:
        """The registry at these URLs (the service's settings resolve them: `service.settings`)."""
        engine = make_engine(database_url)
        return cls(engine, open_blob_store(engine, blob_url))

    @classmethod
    def from_env(cls) -> Registry:
        """For the registry's own command line: COMPOSER_DATABASE_URL and COMPOSER_BLOB_URL (or
        COMPOSER_BLOB_DIR), defaulting to SQLite and blobs in COMPOSER_DATA_DIR."""
        blob_url = os.environ.get("COMPOSER_BLOB_URL")
        if not blob_url:
            blob_url = f"file://{os.environ.get('COMPOSER_BLOB_DIR') or env_data_dir() / 'blobs'}"
        return cls.open(env_database_url(), blob_url)

    def tx(self) -> AbstractContextManager[Session]:
        """One transaction: commit on success, roll back on any exception."""
        return transaction(self.sessions)

    def retry(self, fn: Callable[[Session], T], attempts: int = 5, outage_seconds: float = 60.0) -> T:
        """Run fn in a transaction, retrying on Conflict (for appends that may race, like event seqs), and
        through a database outage (a restart, a failover) of up to `outage_seconds`. `fn` must be safe to
        run again: a commit whose acknowledgement was lost is re-run, so it must refuse to apply twice."""
        conflicts, deadline, pause = 0, time.monotonic() + outage_seconds, 0.1
        while True:
            try:
                with self.tx() as s:
                    return fn(s)
            except Conflict:
                conflicts += 1
                if conflicts >= attempts:
                    raise
                time.sleep(0.01 * conflicts)
            except (OperationalError, InterfaceError):
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def referenced_blobs(self) -> set[str]:
        stmt = union(
            select(Dataset.sha256),
            select(Adapter.blob_sha256).where(Adapter.blob_sha256.is_not(None)),
            select(Adapter.config_sha256).where(Adapter.config_sha256.is_not(None)),
            select(Checkpoint.blob_sha256),
            select(BaseModelRow.weights_sha256).where(BaseModelRow.weights_sha256.is_not(None)),  # derived bases
        )
        with self.sessions() as s:
            return {r[0] for r in s.execute(stmt)}

    def gc(self, min_age_seconds: float = 3600.0, dry_run: bool = False) -> list[str]:
        """Delete blobs no row references. Blobs younger than min_age are kept: a writer may be
        between storing its blob and committing the row that references it."""
        keep = self.referenced_blobs()
        removed = []
        for sha in list(self.blobs.list()):
            if sha in keep or self.blobs.age_seconds(sha) < min_age_seconds:
                continue
            if dry_run or self.blobs.delete_if_older(sha, min_age_seconds):  # re-decided against concurrent puts
                removed.append(sha)
        return removed

    def close(self) -> None:
        self.engine.dispose()


__all__: list[Any] = ["Registry"]
