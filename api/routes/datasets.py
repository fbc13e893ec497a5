"""Datasets: row count and label histogram."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Reader, RegistryDep
from registry_db.models import Dataset
from registry_db.repo import catalog

router = APIRouter(tags=["datasets"])


def dataset_json(d: Dataset) -> dict:
    return {"id": d.id, "task_id": d.task_id, "split": d.split, "format": d.format, "sha256": d.sha256,
            "row_count": d.row_count, "label_histogram": d.label_histogram, "created_at": d.created_at.isoformat()}  # fmt: skip


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return dataset_json(catalog.get_dataset(s, dataset_id, caller.owner_id))
