"""Prompt ensembles: list, compose, and the ensemble endpoint (per-input votes)."""

from __future__ import annotations

from contextlib import ExitStack

from fastapi import APIRouter, Request
from pydantic import AliasChoices, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Reader, RegistryDep, Trainer
from api.errors import Problem
from api.loaders import ensure
from api.schemas import InputRow, examples
from composer import kinds
from composer.prompts.ensemble import Voting
from registry_db.models import AdapterSet
from registry_db.repo import adapters, catalog
from service.catalog import task_spec

router = APIRouter(prefix="/v1", tags=["ensembles"])


class EnsembleIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    task: str
    prompts: list[str] = Field(min_length=1, max_length=32)
    voting: Voting = "majority"


class EnsemblePredictIn(BaseModel):
    inputs: list[InputRow] = Field(min_length=1, max_length=256)
    # the ensemble's own rule unless given; `strategy`, its name before, is still read
    voting: Voting | None = Field(None, validation_alias=AliasChoices("voting", "strategy"))
    early_exit: bool = False


def ensemble_json(s, e: AdapterSet) -> dict:  # type: ignore[no-untyped-def]
    members = adapters.set_members(s, e.id)
    metric = catalog.get_task(s, e.owner_id, e.task_id).metric  # type: ignore[arg-type]
    return {
        "id": e.id,
        "name": e.name,
        "task_id": e.task_id,
        "voting": e.voting,
        "prompts": [m.id for m in members],
        "metric": metric,
        "scores": [m.metrics.get(metric) for m in members],  # each prompt's validation score on the task's metric
        "created_at": e.created_at.isoformat(),
    }


@router.get("/ensembles")
def list_ensembles(caller: Reader, reg: RegistryDep, task: str | None = None) -> list[dict]:
    with reg.tx() as s:
        task_id = catalog.get_task(s, caller.owner_id, task).id if task else None
        return [ensemble_json(s, e) for e in adapters.list_ensembles(s, caller.owner_id, task_id)]


@router.post("/ensembles", status_code=201)
def create_ensemble(body: EnsembleIn, caller: Trainer, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        task = catalog.get_task(s, caller.owner_id, body.task)
        if task.kind != "classification":
            raise Problem(
                422,
                "invalid-input",
                f"task {task.name!r} is a {task.kind} task; an ensemble votes over "
                "classes (serve a regression prompt alone through POST /v1/predict)",
                field="task",
            )
        rows = [adapters.resolve_adapter(s, caller.owner_id, p) for p in body.prompts]
        for r in rows:
            if not kinds.get(r.kind).ensemble_member:
                raise Problem(
                    422,
                    "wrong-endpoint",
                    f"{r.id} is a {r.kind}, not a soft prompt; an ensemble holds "
                    "soft prompts only, and POST /v1/predict serves it",
                    field="prompts",
                )
            if r.task_id != task.id:
                raise Problem(422, "invalid-input", f"prompt {r.id} belongs to another task", field="prompts")
        if len({r.base_model_id for r in rows}) != 1:
            raise Problem(422, "invalid-input", "the prompts were trained on different base models", field="prompts")
        if body.voting == "weighted" and any(r.metrics.get(task.metric) is None for r in rows):
            raise Problem(
                422, "invalid-input", "weighted voting needs a validation score for every prompt", field="voting"
            )
        e = adapters.create_set(
            s,
            owner_id=caller.owner_id,
            kind="ensemble",
            name=body.name,
            adapter_ids=[r.id for r in rows],
            task_id=task.id,
            voting=body.voting,
        )
        return ensemble_json(s, e)


@router.get("/ensembles/{ensemble_id}")
def read_ensemble(ensemble_id: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return ensemble_json(s, adapters.get_ensemble(s, caller.owner_id, ensemble_id))


def _predict(request: Request, reg, caller, ensemble_id: str, body: EnsemblePredictIn) -> dict:  # type: ignore[no-untyped-def]
    with reg.tx() as s:
        e = adapters.get_ensemble(s, caller.owner_id, ensemble_id)
        task = catalog.get_task(s, caller.owner_id, e.task_id)  # type: ignore[arg-type]
        rows = adapters.set_members(s, e.id)
        base_rows = {r.base_model_id: catalog.get_base_model(s, r.base_model_id) for r in rows}
    if not rows:
        raise Problem(422, "invalid-input", "the ensemble has no prompts (K = 0)")
    archived = [r.id for r in rows if r.status == "archived"]
    if archived:
        raise Problem(404, "archived", f"the ensemble's prompts {archived} are archived: it no longer serves")
    spec = task_spec(task)
    voting = body.voting or e.voting or "majority"
    scores = [r.metrics.get(spec.metric) for r in rows]
    rt, device = request.app.state.runtime, request.app.state.settings.device
    with ExitStack() as leases:
        held = [leases.enter_context(ensure(rt, reg, r, base_rows[r.base_model_id], [], device)) for r in rows]
        votes = rt.predict_ensemble(
            held[0].resident, [r.id for r in rows], examples(body.inputs), voting, scores, body.early_exit
        )
    out = []
    for v in votes:
        out.append(
            {
                "label": spec.labels[v.label],
                "agreement": round(v.agreement, 4),
                "votes": {spec.labels[j]: c for j, c in enumerate(v.counts) if c},
                "per_prompt": [
                    {"prompt": r.id, "skipped": True}
                    if p is None
                    else {"prompt": r.id, "label": spec.labels[p[0]], "probability": round(p[1], 6)}
                    for r, p in zip(rows, v.per_prompt, strict=True)
                ],
                "early_exit": v.early_exit,
                "tie_break": v.tie_break,
            }
        )
    return {"ensemble_id": e.id, "voting": voting, "outputs": out}


@router.post("/ensembles/{ensemble_id}/predict")
async def predict(
    ensemble_id: str, body: EnsemblePredictIn, request: Request, caller: Reader, reg: RegistryDep
) -> dict:
    request.app.state.limiter.take(caller.key_id)
    return await run_in_threadpool(_predict, request, reg, caller, ensemble_id, body)
