"""Errors raised by the model side. All are ValueErrors with a message a user can act on."""


class ComposerError(ValueError):
    """Base class for every error the composer raises on bad input."""


class ConfigError(ComposerError):
    """A method or training config is invalid."""


class IncompatibleBaseError(ComposerError):
    """A module was built for another base model (hidden size or identity differ)."""


class ArtifactError(ComposerError):
    """A saved artifact is missing, truncated, corrupted or in a refused format."""


class DataError(ComposerError):
    """A dataset row is invalid. The message carries the line number."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


class TrainingCancelled(Exception):  # noqa: N818 - it is a control-flow signal, not a failure
    """Raised inside a training loop when a cancel was requested; the loop stops at a step boundary."""
