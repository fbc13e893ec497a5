"""Datasets: row count and label histogram; a task's datasets, page by page; deletion while unused."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Reader, RegistryDep, Trainer
from api.schemas import dataset_json
from registry_db.repo import catalog

router = APIRouter(prefix="/v1", tags=["datasets"])


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return dataset_json(catalog.get_dataset(s, dataset_id, caller.owner_id))


@router.get("/tasks/{task}/datasets")
def list_datasets(
    task: str, caller: Reader, reg: RegistryDep, split: str | None = None, limit: int = 50, cursor: str | None = None
) -> dict:
    with reg.tx() as s:
        page = catalog.list_datasets(s, caller.owner_id, task, split, limit, cursor)
        return {"items": [dataset_json(d) for d in page.items], "next_cursor": page.next_cursor}


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, caller: Trainer, reg: RegistryDep) -> Response:
    """409 while a queued or running job, or a live adapter trained on it, uses the dataset."""
    with reg.tx() as s:
        catalog.delete_dataset(s, caller.owner_id, dataset_id)
    return Response(status_code=204)
