"""The small interface every blob backend implements."""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator

from registry_db.errors import BlobCorrupted

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha(sha: str) -> str:
    if not SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


def verify(sha: str, data: bytes) -> bytes:
    got = sha256_hex(data)
    if got != sha:
        raise BlobCorrupted(f"blob {sha[:12]} is corrupted: its bytes hash to {got[:12]}; it will not be served")
    return data


class BlobStore(ABC):
    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store bytes (idempotently) and return their sha256. Storing bytes that are already there
        refreshes their age, so the GC never takes a blob a writer has just been handed."""

    @abstractmethod
    def get(self, sha: str) -> bytes:
        """Return the bytes, verified against the sha256. Raises BlobMissing or BlobCorrupted."""

    @abstractmethod
    def exists(self, sha: str) -> bool: ...

    @abstractmethod
    def delete(self, sha: str) -> None: ...

    @abstractmethod
    def delete_if_older(self, sha: str, min_age_seconds: float) -> bool:
        """Delete the blob only if no `put` refreshed it in the last `min_age_seconds`, decided atomically
        against concurrent puts. Returns whether it was deleted."""

    @abstractmethod
    def list(self) -> Iterator[str]: ...

    @abstractmethod
    def age_seconds(self, sha: str) -> float:
        """Seconds since the blob was stored."""

    def describe(self) -> str:
        return type(self).__name__
