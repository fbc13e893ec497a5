"""The blob store: content addressing, verified reads, atomic writes, GC, both backends."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import update

from registry_db.blobs import LocalBlobStore, open_blob_store, sha256_hex
from registry_db.errors import BlobCorrupted, BlobMissing
from registry_db.models import BlobChunk
from registry_db.repo import catalog
from tests.registry.helpers import seed


@pytest.fixture(params=["file", "db"])
def reg(request, registry, db_blob_registry):
    return registry if request.param == "file" else db_blob_registry


def test_put_get_roundtrip_and_dedup(reg):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several DB chunks
    sha = reg.blobs.put(data)
    assert sha == sha256_hex(data) and reg.blobs.put(data) == sha
    assert reg.blobs.get(sha) == data
    assert list(reg.blobs.list()) == [sha]
    with pytest.raises(BlobMissing):
        reg.blobs.get("0" * 64)


def test_corrupted_blob_is_never_served(reg):
    sha = reg.blobs.put(b"weights" * 100)
    if isinstance(reg.blobs, LocalBlobStore):
        reg.blobs.path(sha).write_bytes(b"tampered" * 100)
    else:
        with reg.tx() as s:
            s.execute(update(BlobChunk).where(BlobChunk.sha256 == sha).values(data=b"tampered"))
    with pytest.raises(BlobCorrupted, match="corrupted"):
        reg.blobs.get(sha)


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = LocalBlobStore(tmp_path)
    sha = store.put(b"x" * 1000)
    assert store.path(sha).relative_to(tmp_path).parts[:2] == (sha[:2], sha[2:4])
    assert list((tmp_path / "tmp").iterdir()) == []


def test_gc_removes_only_unreferenced_old_blobs(reg):
    ids = seed(reg)
    kept = reg.blobs.put(b'{"text": "a", "label": "pos"}\n')
    orphan = reg.blobs.put(b"orphan")
    with reg.tx() as s:
        catalog.add_dataset(s, ids["task"], "train", "jsonl", kept, 1, {"pos": 1})
    assert reg.gc(min_age_seconds=3600) == []  # too young to collect: a writer may be mid-registration
    assert reg.gc(min_age_seconds=-1, dry_run=True) == [orphan]
    assert reg.blobs.exists(orphan)
    assert reg.gc(min_age_seconds=-1) == [orphan]
    assert not reg.blobs.exists(orphan) and reg.blobs.exists(kept)


def test_blob_url_selects_the_backend(registry, tmp_path):
    assert open_blob_store(registry.engine, f"file://{tmp_path}/b").describe() == f"file://{tmp_path}/b"
    assert open_blob_store(registry.engine, "db://").describe() == "db://"
    with pytest.raises(ValueError, match="COMPOSER_BLOB_URL"):
        open_blob_store(registry.engine, "s3://bucket")


def test_gc_never_deletes_a_blob_a_concurrent_put_has_just_deduplicated(reg):
    """The race: the GC sees an old orphan; a writer `put`s the same bytes (deduplicated, so nothing is
    written) and is about to commit a row that references it; then the GC deletes. The put must win."""
    data = b"weights that a job is about to register"
    sha = reg.blobs.put(data)
    make_old(reg, sha)
    real_age = reg.blobs.age_seconds

    def age_then_a_writer_arrives(s: str) -> float:
        age = real_age(s)
        if s == sha:
            assert reg.blobs.put(data) == sha  # the concurrent writer, between the GC's look and its delete
        return age

    reg.blobs.age_seconds = age_then_a_writer_arrives
    try:
        assert reg.gc(min_age_seconds=60) == []
    finally:
        reg.blobs.age_seconds = real_age
    assert reg.blobs.get(sha) == data
    make_old(reg, sha)  # with no writer, the same orphan is collected
    assert reg.gc(min_age_seconds=60) == [sha] and not reg.blobs.exists(sha)


def make_old(reg, sha: str, seconds: float = 3 * 3600) -> None:
    if isinstance(reg.blobs, LocalBlobStore):
        then = os.path.getmtime(reg.blobs.path(sha)) - seconds
        os.utime(reg.blobs.path(sha), (then, then))
    else:
        from datetime import timedelta

        from registry_db.models import BlobObject, utcnow

        with reg.tx() as s:
            s.execute(
                update(BlobObject)
                .where(BlobObject.sha256 == sha)
                .values(created_at=utcnow() - timedelta(seconds=seconds))
            )
