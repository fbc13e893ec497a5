"""Content-addressed blob store: sha256-named, written atomically, verified on every read.

`COMPOSER_BLOB_URL` selects the backend: `file:///path` (the default, under the data
directory) or `db://` (chunks in the registry database, shared by every machine that
reaches it). `COMPOSER_BLOB_DIR` is a shorthand for `file://` with that directory.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine

from registry_db.blobs.base import BlobStore, sha256_hex
from registry_db.blobs.database import DatabaseBlobStore
from registry_db.blobs.local import LocalBlobStore
from registry_db.engine import data_dir

__all__ = ["BlobStore", "DatabaseBlobStore", "LocalBlobStore", "open_blob_store", "sha256_hex"]


def open_blob_store(engine: Engine, url: str | None = None) -> BlobStore:
    url = url or os.environ.get("COMPOSER_BLOB_URL")
    if not url:
        blob_dir = os.environ.get("COMPOSER_BLOB_DIR")
        url = f"file://{blob_dir or data_dir() / 'blobs'}"
    if url.startswith("file://"):
        return LocalBlobStore(url[len("file://") :])
    if url in ("db://", "db:"):
        return DatabaseBlobStore(engine)
    raise ValueError(f"unsupported COMPOSER_BLOB_URL {url!r}; use file:///path or db://")
