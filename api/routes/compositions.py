"""POST /v1/compositions: save a composition tree as a module of its own (see service/compositions.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import RegistryDep, Trainer
from api.errors import Problem
from api.loaders import adapter_json
from service.compositions import CompositionSpec, InvalidComposition, save

router = APIRouter(prefix="/v1", tags=["adapters"])


@router.post("/compositions", status_code=201)
async def save_composition(body: CompositionSpec, request: Request, caller: Trainer, reg: RegistryDep) -> dict:
    """Save a tree under a name: a module of kind `composition` with an id, versions and aliases, served by
    `POST /v1/predict` with `adapter` set to it. Its references are resolved to ids now."""
    try:
        row = await run_in_threadpool(save, reg, caller.owner_id, body)
    except InvalidComposition as e:
        raise Problem(422, "invalid-composition", str(e), field=e.where) from None
    return adapter_json(row)
