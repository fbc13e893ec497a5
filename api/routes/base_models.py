"""Base models: register a local model directory (operator), list them (the server path: operators only)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Caller, Operator, Reader, RegistryDep
from api.errors import Problem
from registry_db.models import BaseModelRow
from registry_db.repo import catalog
from service.catalog import register_base_model

router = APIRouter(prefix="/v1", tags=["base-models"])


class BaseModelIn(BaseModel):
    path: str = Field(description="a local directory with config.json, weights and tokenizer")
    name: str | None = None
    num_layers: int | None = Field(None, ge=1, le=48, description="keep only the first N layers")


def base_json(b: BaseModelRow, caller: Caller) -> dict:
    out = {
        "id": b.id,
        "name": b.name,
        "identity": b.identity,
        "architecture": b.architecture,
        "hidden_size": b.hidden_size,
        "num_layers": b.num_layers,
        # a derived base (fine-tuned by a multi-task job): its parent and the job, its lineage
        "parent_id": b.parent_id,
        "job_id": b.job_id,
        "derived": b.weights_sha256 is not None,
    }
    return {**out, "path": b.path} if caller.can("operator") else out


@router.post("/base-models", status_code=201)
def register(body: BaseModelIn, caller: Operator, reg: RegistryDep) -> dict:
    if not (Path(body.path) / "config.json").is_file():
        raise Problem(422, "invalid-input", f"{body.path} is not a model directory", field="path")
    row, _ = register_base_model(reg, body.path, name=body.name, num_layers=body.num_layers)
    return base_json(row, caller)


@router.get("/base-models")
def list_base_models(caller: Reader, reg: RegistryDep) -> list[dict]:
    with reg.tx() as s:
        owner = None if caller.can("operator") else caller.owner_id
        return [base_json(b, caller) for b in catalog.list_base_models(s, owner)]


@router.get("/base-models/{ref}")
def get_base_model(ref: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        owner = None if caller.can("operator") else caller.owner_id
        return base_json(catalog.get_base_model(s, ref, owner), caller)
