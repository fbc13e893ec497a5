"""Content-addressed blob store: sha256-named, written atomically, verified on every read.

`COMPOSER_BLOB_URL` selects the backend: `file:///path` (the default, under the data
directory) or `db://` (chunks in the registry database, shared by every machine that
reaches it). `COMPOSER_BLOB_DIR` is a shorthand for `file://` with that directory.
"""

from __future__ import annotations

from sqlalchemy import Engine

from registry_db.blobs.base import BlobStore, sha256_hex
from registry_db.blobs.database import DatabaseBlobStore
from registry_db.blobs.local import LocalBlobStore

__all__ = ["BlobStore", "DatabaseBlobStore", "LocalBlobStore", "open_blob_store", "sha256_hex"]


def open_blob_store(engine: Engine, url: str) -> BlobStore:
    """`file:///path` or `db://` (chunks in the registry database); the caller resolves the default."""
    if url.startswith("file://"):
        return LocalBlobStore(url[len("file://") :])
    if url in ("db://", "db:"):
        return DatabaseBlobStore(engine)
    raise ValueError(f"unsupported COMPOSER_BLOB_URL {url!r}; use file:///path or db://")
