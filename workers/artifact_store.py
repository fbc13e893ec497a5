"""Moving composer artifacts in and out of the registry's blob store."""

from __future__ import annotations

from composer import artifacts
from composer.artifacts import AdapterArtifact
from registry_db.models import Adapter
from registry_db.registry import Registry


def store(reg: Registry, art: AdapterArtifact) -> tuple[str, str]:
    """Put the weights and the config as blobs; returns (weights sha, config sha)."""
    config, weights = artifacts.to_files(art)
    return reg.blobs.put(weights), reg.blobs.put(config)


def fetch(reg: Registry, row: Adapter) -> AdapterArtifact:
    """Read an adapter's blobs (checksums verified by the store, then by the artifact format)."""
    if row.blob_sha256 is None or row.config_sha256 is None:
        raise ValueError(f"adapter {row.id} has no stored weights")
    return artifacts.from_files(reg.blobs.get(row.config_sha256), reg.blobs.get(row.blob_sha256))


def param_count(art: AdapterArtifact) -> int:
    return int(sum(t.numel() for k, t in art.tensors.items() if k.startswith("adapter.")))
