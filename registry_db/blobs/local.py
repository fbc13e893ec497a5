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
        try:
            os.utime(final)  # already stored: refresh its age (see delete_if_older)
            return sha
        except FileNotFoundError:
            pass
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

    def delete_if_older(self, sha: str, min_age_seconds: float) -> bool:
        """Move the blob aside first, then look at its age: a `put` that refreshed it before the move is
        seen (the blob goes back); a `put` after the move finds no file to refresh and writes it anew."""
        final = self.path(sha)
        aside = self.root / "tmp" / f"gc.{sha}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            return False
        if time.time() - aside.stat().st_mtime < min_age_seconds:
            os.replace(aside, final)  # refreshed: keep it (identical bytes if a put rewrote it meanwhile)
            return False
        aside.unlink()
        return True

    def list(self) -> Iterator[str]:
        for p in self.root.glob("??/??/*"):
            if SHA_RE.match(p.name):
                yield p.name

    def age_seconds(self, sha: str) -> float:
        return time.time() - self.path(sha).stat().st_mtime

    def describe(self) -> str:
        return f"file://{self.root}"
