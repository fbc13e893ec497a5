"""Strict safetensors reading and atomic writing. Nothing here ever unpickles."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from composer.errors import ArtifactError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """A config file's JSON object, or an ArtifactError that names the file."""
    try:
        meta = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{what} is not a JSON object")
    return meta


def tensors_from_bytes(data: bytes, what: str = "weights") -> dict[str, torch.Tensor]:
    """Parse safetensors bytes; refuse empty, truncated, pickled or non-finite content."""
    if not data:
        raise ArtifactError(f"{what}: the safetensors file is empty")
    if data[:2] == b"\x80\x02" or data[:2] == b"PK":
        raise ArtifactError(f"{what}: this is a pickle/torch.save file, not safetensors; it is never unpickled")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise ArtifactError(f"{what}: not a valid safetensors file (truncated or corrupted?): {e}") from None
    floats = [(name, t) for name, t in tensors.items() if t.is_floating_point() and t.numel()]
    if floats:  # one max-abs per tensor in a single call (a NaN or Inf makes it non-finite), not 3 calls each
        finite = torch.isfinite(torch.stack(torch._foreach_norm([t for _, t in floats], float("inf")))).tolist()
        bad = [name for (name, _), ok in zip(floats, finite, strict=True) if not ok]
        if bad:
            raise ArtifactError(f"{what}: tensor {bad[0]!r} contains NaN or Inf")
    return tensors


def read_tensors(path: Path, what: str | None = None) -> dict[str, torch.Tensor]:
    if path.suffix in PICKLE_SUFFIXES:
        raise ArtifactError(f"{path.name}: pickle-based weights are refused; convert to safetensors first")
    if not path.is_file():
        raise ArtifactError(f"missing weights file {path}")
    return tensors_from_bytes(path.read_bytes(), what or path.name)


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Build a directory under a temporary name, then rename it into place.

    A failure midway leaves no partial artifact at `target` (and any previous version intact).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_file(path: Path, data: bytes) -> None:
    _fsync_write(path, data)
