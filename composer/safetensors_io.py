"""Strict safetensors reading and atomic writing. Nothing here unpickles, except `read_weights_only`: the one
reader of AdapterHub's `pytorch_adapter.bin` (prefix tuning, which adapters 1.3 cannot save as safetensors), with
`torch.load(weights_only=True)` and nothing looser."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
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
    _check_finite(tensors, what)
    return tensors


def _check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    floats = [(name, t) for name, t in tensors.items() if t.is_floating_point() and t.numel()]
    if floats:  # one max-abs per tensor in a single call (a NaN or Inf makes it non-finite), not 3 calls each
        finite = torch.isfinite(torch.stack(torch._foreach_norm([t for _, t in floats], float("inf")))).tolist()
        bad = [name for (name, _), ok in zip(floats, finite, strict=True) if not ok]
        if bad:
            raise ArtifactError(f"{what}: tensor {bad[0]!r} contains NaN or Inf")


def read_weights_only(data: bytes, what: str, hint: str) -> dict[str, torch.Tensor]:
    """A torch.save'd dict of tensors, read with `torch.load(weights_only=True)`: torch's restricted unpickler,
    which builds tensors and plain containers only and refuses any other global. Anything else it holds is
    refused with `hint` (how to convert it)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{what}: refused, not a plain file of tensors ({first}); {hint}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ArtifactError(f"{what}: refused, it holds something other than named tensors; {hint}")
    _check_finite(obj, what)
    return obj


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
