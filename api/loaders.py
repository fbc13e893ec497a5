"""Glue between the registry rows and the composer serving runtime (the API owns both sides)."""

from __future__ import annotations

import json
from typing import Any

from composer import fusion_artifacts, prompt_artifacts
from composer.base import load_base
from composer.heads import HeadConfig
from composer.serving import Resident, Runtime
from registry_db.models import Adapter, BaseModelRow
from registry_db.registry import Registry
from registry_db.repo import adapters, catalog
from workers import artifact_store


def resident(runtime: Runtime, reg: Registry, base_row: BaseModelRow, device: str | None) -> Resident:
    def load():  # type: ignore[no-untyped-def]
        base = load_base(base_row.path, name=base_row.name, num_hidden_layers=base_row.num_layers, device=device)
        if base.identity.fingerprint != base_row.identity:
            raise ValueError(f"the model at {base_row.path} no longer matches base model {base_row.name!r}")
        return base

    return runtime.resident(base_row.id, load)


def ensure(runtime: Runtime, reg: Registry, row: Adapter, device: str | None,
           base_row: BaseModelRow | None = None, members: list[Adapter] | None = None) -> Resident:  # fmt: skip
    """Make the adapter (and, for a fusion, its members) resident; returns its base's resident.
    Callers that already read the base row and fusion members pass them, saving a transaction."""
    if base_row is None or (row.kind == "fusion" and members is None):
        with reg.tx() as s:
            base_row = catalog.get_base_model(s, row.base_model_id)
            members = adapters.fusion_members(s, row.id) if row.kind == "fusion" else []
    members = members or []
    res = resident(runtime, reg, base_row, device)
    if row.kind in ("st_a", "mt_a"):
        runtime.ensure_adapter(res, base_row.id, row.id, lambda: artifact_store.fetch(reg, row))
    elif row.kind == "fusion":

        def load_fusion():  # type: ignore[no-untyped-def]
            config = reg.blobs.get(row.config_sha256)  # type: ignore[arg-type]
            art, head = fusion_artifacts.from_files(config, reg.blobs.get(row.blob_sha256))  # type: ignore[arg-type]
            art.members = [m.id for m in members]  # lineage is the truth (a derived fusion keeps fewer)
            return art, head, HeadConfig.from_dict(json.loads(config)["head"])

        loaders = [(m.id, (lambda m=m: artifact_store.fetch(reg, m))) for m in members]
        runtime.ensure_fusion(res, base_row.id, row.id, load_fusion, loaders)
    elif row.kind == "soft_prompt":
        runtime.ensure_prompt(res, base_row.id, row.id, lambda: prompt_from_row(reg, row))
    return res


def prompt_from_row(reg: Registry, row: Adapter):  # type: ignore[no-untyped-def]
    return prompt_artifacts.from_files(reg.blobs.get(row.config_sha256), reg.blobs.get(row.blob_sha256))  # type: ignore[arg-type]


def adapter_json(row: Adapter, **extra: Any) -> dict[str, Any]:
    return {
        "id": row.id, "kind": row.kind, "name": row.name, "version": row.version, "status": row.status,
        "task_id": row.task_id, "base_model_id": row.base_model_id, "method_config": row.method_config,
        "param_count": row.param_count, "metrics": row.metrics, "visibility": row.visibility, "job_id": row.job_id,
        "created_at": row.created_at.isoformat(), **extra,
    }  # fmt: skip
