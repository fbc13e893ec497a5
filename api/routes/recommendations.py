"""POST /v1/tasks/{task}/recommendations: rank the registry's adapters as transfer sources for a task
(see service/transfer.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Reader, RegistryDep
from api.loaders import resident
from composer.transfer.estimators import Estimator
from service.transfer import rank

router = APIRouter(prefix="/v1", tags=["tasks"])


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    estimator: Estimator = "logme"
    rows: int = Field(1000, ge=10, le=1000)  # the target's training rows used, at most
    base_model: str | None = None  # default: the base that holds the most candidates
    dataset: str | None = None  # a train dataset of the task; default: its newest
    limit: int = Field(50, ge=1, le=500)  # items returned
    exclude: list[str] = Field(default_factory=list, max_length=500)  # adapter ids not to rank


@router.post("/tasks/{task}/recommendations")
async def recommend(task: str, body: RecommendationRequest, request: Request, caller: Reader, reg: RegistryDep) -> dict:
    runtime, settings = request.app.state.runtime, request.app.state.settings

    def load_base(base_row):  # type: ignore[no-untyped-def]
        return resident(runtime, base_row, settings.device, reg).base

    ranking = await run_in_threadpool(
        rank,
        reg,
        settings,
        load_base,
        caller.owner_id,
        task,
        body.estimator,
        body.rows,
        body.base_model,
        body.dataset,
        frozenset(body.exclude),
    )
    out = ranking.json()
    out["items"] = out["items"][: body.limit]
    return out
