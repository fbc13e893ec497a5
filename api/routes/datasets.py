"""Datasets: row count and label histogram."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Reader, RegistryDep
from api.schemas import dataset_json
from registry_db.repo import catalog

router = APIRouter(tags=["datasets"])


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return dataset_json(catalog.get_dataset(s, dataset_id, caller.owner_id))
