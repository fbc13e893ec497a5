"""Tasks and their dataset uploads (JSONL or CSV, validated row by row)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from api.deps import Reader, RegistryDep, Trainer
from api.errors import Problem
from api.schemas import dataset_json
from registry_db.models import Task
from registry_db.repo import catalog
from service.catalog import upload_dataset

router = APIRouter(prefix="/v1", tags=["tasks"])


class TaskIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["classification", "regression"]
    labels: list[str] = Field(default_factory=list)
    metric: str | None = None


def task_json(t: Task) -> dict:
    return {
        "id": t.id,
        "name": t.name,
        "kind": t.kind,
        "labels": t.labels,
        "metric": t.metric,
        "created_at": t.created_at.isoformat(),
    }


@router.post("/tasks", status_code=201)
def create_task(body: TaskIn, caller: Trainer, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return task_json(catalog.create_task(s, caller.owner_id, body.name, body.kind, body.labels, body.metric))


@router.get("/tasks")
def list_tasks(caller: Reader, reg: RegistryDep) -> list[dict]:
    with reg.tx() as s:
        return [task_json(t) for t in catalog.list_tasks(s, caller.owner_id)]


@router.get("/tasks/{name}")
def get_task(name: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return task_json(catalog.get_task(s, caller.owner_id, name))


@router.post("/tasks/{name}/datasets", status_code=201)
async def upload(
    name: str,
    request: Request,
    caller: Trainer,
    reg: RegistryDep,
    file: UploadFile = File(...),
    split: Literal["train", "validation", "test"] = Form(...),
) -> dict:
    limit = int(request.app.state.settings.max_upload_mb * (1 << 20))
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, "payload-too-large", f"uploads are limited to {request.app.state.settings.max_upload_mb} MB")
    if not data.strip():
        raise Problem(422, "invalid-dataset", "the file is empty", field="file")
    from starlette.concurrency import run_in_threadpool

    ds, created = await run_in_threadpool(upload_dataset, reg, caller.owner_id, name, split, data, file.filename)
    return {**dataset_json(ds), "deduplicated": not created}
