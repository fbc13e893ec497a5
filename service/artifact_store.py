"""Moving composer artifacts in and out of the registry's blob store, through each kind's face."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from composer import kinds
from composer.errors import ArtifactError
from composer.method import Artifact
from registry_db.models import Adapter
from registry_db.registry import Registry
from registry_db.repo import adapters

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Stored(tuple):  # type: ignore[type-arg]
    """(weights sha, config sha), and how many bytes the two hold (`nbytes`)."""

    nbytes: int = 0


def store(reg: Registry, art: Artifact) -> Stored:
    """Put the weights and the config as blobs; returns (weights sha, config sha) with their size."""
    config, weights = kinds.get(art.kind).to_files(art)
    out = Stored((reg.blobs.put(weights), reg.blobs.put(config)))
    out.nbytes = len(weights) + len(config)
    return out


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


def register_stored(
    s: Session,
    art: Artifact,
    shas: tuple[str, str],
    *,
    owner_id: str,
    task_id: str,
    base_model_id: str,
    name: str,
    job_id: str | None = None,
    fusion_members: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    **method_extra: Any,
) -> Adapter:
    """The one way a stored artifact (`store` returned `shas`) becomes a registry row: its registration
    fields, and a fusion's members in order (the `fusion_members` table is their truth)."""
    fields = registration(art, **method_extra)
    if metrics is not None:
        fields["metrics"] = metrics
    row = adapters.register_adapter(
        s,
        owner_id=owner_id,
        task_id=task_id,
        base_model_id=base_model_id,
        name=name,
        job_id=job_id,
        blob_sha256=shas[0],
        config_sha256=shas[1],
        stored_bytes=getattr(shas, "nbytes", 0),
        **fields,
    )
    if fusion_members:
        adapters.add_fusion_members(s, row.id, fusion_members)
    return row
