"""Blobs in a local directory, sharded as `ab/cd/abcd...`; temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from registry_db.blobs.base import SHA_RE, BlobStore, check_sha, sha256_hex, verify
from registry_db.errors import BlobMissing


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        check_sha(sha)
        return self.root / sha[:2] / sha[2:4] / sha

    def put(self, data: bytes) -> str:
        sha = sha256_hex(data)
        final = self.path(sha)
        if final.exists():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / f"{sha}.{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return sha

    def get(self, sha: str) -> bytes:
        p = self.path(sha)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {sha[:12]} is not in {self.root}") from None
        return verify(sha, data)

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def delete(self, sha: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha).unlink()

    def list(self) -> Iterator[str]:
        for p in self.root.glob("??/??/*"):
            if SHA_RE.match(p.name):
                yield p.name

    def age_seconds(self, sha: str) -> float:
        return time.time() - self.path(sha).stat().st_mtime

    def describe(self) -> str:
        return f"file://{self.root}"
