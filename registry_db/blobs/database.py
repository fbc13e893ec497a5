"""Blobs stored in the registry database in 1 MiB chunks (`db://`).

API replicas and workers on several machines then share weights through PostgreSQL,
with no shared disk and no extra server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from registry_db.blobs.base import BlobStore, check_sha, sha256_hex, verify
from registry_db.engine import session_factory, transaction
from registry_db.errors import BlobMissing
from registry_db.models import BlobChunk, BlobObject, utcnow

CHUNK = 1 << 20


class DatabaseBlobStore(BlobStore):
    def __init__(self, engine: Engine):
        self.engine = engine
        self.sessions = session_factory(engine)

    def put(self, data: bytes) -> str:
        sha = sha256_hex(data)
        with transaction(self.sessions) as s:  # already stored: refresh its age (see delete_if_older)
            res = s.execute(update(BlobObject).where(BlobObject.sha256 == sha).values(created_at=utcnow()))
            if res.rowcount == 1:  # type: ignore[attr-defined]
                return sha
        try:
            with transaction(self.sessions) as s:
                s.add(BlobObject(sha256=sha, size=len(data)))
                s.flush()
                for i in range(0, max(len(data), 1), CHUNK):
                    s.add(BlobChunk(sha256=sha, seq=i // CHUNK, data=data[i : i + CHUNK]))
        except IntegrityError:
            pass  # a concurrent writer stored the same content first: content addressing makes that fine
        return sha

    def get(self, sha: str) -> bytes:
        check_sha(sha)
        with self.sessions() as s:
            if s.get(BlobObject, sha) is None:
                raise BlobMissing(f"blob {sha[:12]} is not in the database")
            chunks = s.scalars(select(BlobChunk.data).where(BlobChunk.sha256 == sha).order_by(BlobChunk.seq)).all()
        return verify(sha, b"".join(chunks))

    def exists(self, sha: str) -> bool:
        check_sha(sha)
        with self.sessions() as s:
            return s.get(BlobObject, sha) is not None

    def delete(self, sha: str) -> None:
        with transaction(self.sessions) as s:
            s.execute(delete(BlobChunk).where(BlobChunk.sha256 == sha))
            s.execute(delete(BlobObject).where(BlobObject.sha256 == sha))

    def delete_if_older(self, sha: str, min_age_seconds: float) -> bool:
        """The age test and the delete are one transaction holding the row: a concurrent put's refresh
        either commits first (the test fails) or waits and then finds no row (and stores it anew)."""
        cutoff = utcnow() - timedelta(seconds=min_age_seconds)
        try:
            with transaction(self.sessions) as s:
                row = s.scalars(select(BlobObject).where(BlobObject.sha256 == sha).with_for_update()).first()
                if row is None or row.created_at >= cutoff:
                    return False
                s.execute(delete(BlobChunk).where(BlobChunk.sha256 == sha))
                s.execute(delete(BlobObject).where(BlobObject.sha256 == sha))
        except OperationalError:  # SQLite: a put committed after our read; its refresh wins
            return False
        return True

    def list(self) -> Iterator[str]:
        with self.sessions() as s:
            yield from s.scalars(select(BlobObject.sha256)).all()

    def age_seconds(self, sha: str) -> float:
        with self.sessions() as s:
            row = s.get(BlobObject, sha)
            return (utcnow() - row.created_at).total_seconds() if row else 0.0

    def describe(self) -> str:
        return "db://"
