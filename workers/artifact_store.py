"""Moving composer artifacts in and out of the registry's blob store, through each kind's face."""

from __future__ import annotations

from typing import Any

from composer import kinds
from composer.errors import ArtifactError
from composer.method import Artifact
from registry_db.models import Adapter
from registry_db.registry import Registry


def store(reg: Registry, art: Artifact) -> tuple[str, str]:
    """Put the weights and the config as blobs; returns (weights sha, config sha)."""
    config, weights = kinds.get(art.kind).to_files(art)
    return reg.blobs.put(weights), reg.blobs.put(config)


def fetch(reg: Registry, row: Adapter) -> Any:
    """Read a module's blobs (checksums verified by the store, then by the artifact format)."""
    if row.blob_sha256 is None or row.config_sha256 is None:
        raise ArtifactError(f"adapter {row.id} has no stored weights")
    return kinds.get(row.kind).from_files(reg.blobs.get(row.config_sha256), reg.blobs.get(row.blob_sha256))


def registration(art: Artifact, **method_extra: Any) -> dict[str, Any]:
    """The registry fields a stored artifact brings: kind, method config, hidden size, parameter count, metrics."""
    face = kinds.get(art.kind)
    return {
        "kind": face.name,
        "method_config": face.method_config(art, **method_extra),
        "hidden_size": art.hidden_size,
        "param_count": face.param_count(art),
        "metrics": dict(art.metrics),
    }
