"""Registry errors. Each maps to one HTTP status in the API (404, 409, 422, 500)."""


class RegistryError(Exception):
    """Base class."""


class NotFound(RegistryError):  # noqa: N818
    """No such row, or not visible to the caller."""


class Conflict(RegistryError):  # noqa: N818
    """A uniqueness rule was hit: a version number, an idempotency key, a name."""


class InvalidInput(RegistryError):  # noqa: N818
    """A value violates a registry rule (label set with duplicates, hidden size mismatch, ...)."""


class LimitExceeded(RegistryError):  # noqa: N818
    """An owner is at a configured limit (active jobs); retry later."""


class BlobCorrupted(RegistryError):  # noqa: N818
    """A blob's bytes no longer match its sha256. It is never served."""


class BlobMissing(NotFound):
    """A referenced blob is not in the store."""
