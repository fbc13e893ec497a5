"""POST /v1/merges: merge registered adapters of one kind into one new module (see service/merges.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import RegistryDep, Trainer
from api.loaders import adapter_json, resident
from service.merges import MergeSpec, merge

router = APIRouter(prefix="/v1", tags=["adapters"])


@router.post("/merges", status_code=201)
async def create_merge(body: MergeSpec, request: Request, caller: Trainer, reg: RegistryDep) -> dict:
    runtime, settings = request.app.state.runtime, request.app.state.settings
    row, _ = await run_in_threadpool(
        merge,
        reg,
        caller.owner_id,
        body,
        lambda base_row: resident(runtime, base_row, settings.device, reg).base,
        settings,
    )
    return adapter_json(row)
