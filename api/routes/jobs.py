"""Jobs: submit (202, idempotent), list, get, events (JSON or Server-Sent Events), cancel, checkpoints;
and /fusions, the "fuse these adapters for this task" entry point."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from api.deps import Reader, RegistryDep, Trainer
from registry_db.models import FINISHED, Job, JobEvent
from registry_db.repo import jobs
from service import specs
from service.jobs import JOB_TYPES
from service.jobs.fusion import FusionJobSpec
from service.submit import submit_job

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobIn(BaseModel):
    """A job: its `type` (one of the registered job types) and that type's spec fields, validated by the
    type's own model at submit."""

    model_config = ConfigDict(extra="allow")
    type: Literal[tuple(JOB_TYPES)]  # type: ignore[valid-type]


def job_json(j: Job) -> dict:
    return {
        "id": j.id,
        "type": j.type,
        "status": j.status,
        "spec": j.spec,
        "attempts": j.attempts,
        "worker": j.worker,
        "progress": j.progress,
        "result": j.result,
        "error": j.error,
        "cancel_requested": j.cancel_requested,
        "idempotency_key": j.idempotency_key,
        "created_at": j.created_at.isoformat(),
        "started_at": j.started_at.isoformat() if j.started_at else None,
        "finished_at": j.finished_at.isoformat() if j.finished_at else None,
    }


def event_json(e: JobEvent) -> dict:
    return {"seq": e.seq, "type": e.type, "payload": e.payload, "created_at": e.created_at.isoformat()}


def _submit(request: Request, reg, caller, job_type: str, spec: dict, key: str | None) -> JSONResponse:  # type: ignore[no-untyped-def]
    limit = request.app.state.settings.max_active_jobs_per_owner
    job, created = submit_job(reg, caller.owner_id, job_type, spec, key, send=request.app.state.send, max_active=limit)
    if created:
        with reg.tx() as s:
            job = jobs.get_job(s, job.id)
    return JSONResponse(job_json(job), status_code=202 if created else 200)


@router.post("/jobs", status_code=202)
def submit(
    body: JobIn,
    request: Request,
    caller: Trainer,
    reg: RegistryDep,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
) -> JSONResponse:
    spec = body.model_dump(exclude={"type"})
    return _submit(request, reg, caller, body.type, spec, idempotency_key)


@router.post("/fusions", status_code=202)
def fuse(
    body: FusionJobSpec,
    request: Request,
    caller: Trainer,
    reg: RegistryDep,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
) -> JSONResponse:
    return _submit(request, reg, caller, "fusion", body.model_dump(exclude_none=True), idempotency_key)


@router.get("/jobs/options")
def job_options(caller: Reader) -> dict:
    """Each job type's defaults (fields and hyperparameters) and the adapter presets, for job forms."""
    return specs.options()


@router.get("/jobs")
def list_jobs(
    caller: Reader,
    reg: RegistryDep,
    status: str | None = None,
    type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict:
    with reg.tx() as s:
        page = jobs.list_jobs(s, caller.owner_id, status, type, limit, cursor)
        return {"items": [job_json(j) for j in page.items], "next_cursor": page.next_cursor}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return job_json(jobs.get_job(s, job_id, caller.owner_id))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, caller: Trainer, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return job_json(jobs.request_cancel(s, job_id, caller.owner_id))


@router.get("/jobs/{job_id}/checkpoints")
def checkpoints(job_id: str, caller: Reader, reg: RegistryDep) -> list[dict]:
    with reg.tx() as s:
        jobs.get_job(s, job_id, caller.owner_id)
        evals = [
            (e.payload.get("step", 0), e.payload)
            for e in jobs.list_events(s, job_id, limit=100_000)
            if e.type == "metric"
        ]
        out = []
        for c in jobs.list_checkpoints(s, job_id):
            # the validation metrics of the last evaluation the checkpoint holds (none before the first)
            seen = [p for step, p in evals if step <= c.step]
            metrics = {k: v for k, v in seen[-1].items() if k != "step"} if seen else None
            row = {"step": c.step, "attempt": c.attempt, "sha256": c.blob_sha256, "size": c.size}
            out.append({**row, "created_at": c.created_at.isoformat(), "metrics": metrics})
        return out


@router.get("/jobs/{job_id}/events")
async def events(job_id: str, request: Request, caller: Reader, reg: RegistryDep, after: int = 0):  # type: ignore[no-untyped-def]
    def fetch(after_seq: int) -> tuple[list[dict], str]:
        with reg.tx() as s:
            job = jobs.get_job(s, job_id, caller.owner_id)
            return [event_json(e) for e in jobs.list_events(s, job_id, after_seq)], job.status

    first, status = await run_in_threadpool(fetch, after)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return JSONResponse({"items": first, "status": status})
    poll = request.app.state.settings.sse_poll_seconds

    async def stream():  # type: ignore[no-untyped-def]
        seq, batch, st = after, first, status
        quiet = 0.0
        while True:
            for e in batch:
                seq = e["seq"]
                yield f"id: {seq}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n"
            quiet = 0.0 if batch else quiet + poll
            if quiet >= 15:  # a comment line keeps proxies and clients from timing out on a queued job
                quiet = 0.0
                yield ": keep-alive\n\n"
            if st in FINISHED:
                yield f"event: end\ndata: {json.dumps({'status': st})}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(poll)
            batch, st = await run_in_threadpool(fetch, seq)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
