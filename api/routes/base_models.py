"""Base models: register a local model directory (admin), list them."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Admin, Reader, RegistryDep
from api.errors import Problem
from registry_db.models import BaseModelRow
from registry_db.repo import catalog
from workers.catalog import register_base_model

router = APIRouter(tags=["base-models"])


class BaseModelIn(BaseModel):
    path: str = Field(description="a local directory with config.json, weights and tokenizer")
    name: str | None = None
    num_layers: int | None = Field(None, ge=1, le=48, description="keep only the first N layers")


def base_json(b: BaseModelRow) -> dict:
    return {"id": b.id, "name": b.name, "identity": b.identity, "architecture": b.architecture,
            "hidden_size": b.hidden_size, "num_layers": b.num_layers, "path": b.path}  # fmt: skip


@router.post("/base-models", status_code=201)
def register(body: BaseModelIn, caller: Admin, reg: RegistryDep) -> dict:
    if not (Path(body.path) / "config.json").is_file():
        raise Problem(422, "invalid-input", f"{body.path} is not a model directory", field="path")
    row, _ = register_base_model(reg, body.path, name=body.name, num_layers=body.num_layers)
    return base_json(row)


@router.get("/base-models")
def list_base_models(caller: Reader, reg: RegistryDep) -> list[dict]:
    with reg.tx() as s:
        return [base_json(b) for b in catalog.list_base_models(s)]
