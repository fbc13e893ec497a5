"""POST /v1/predict: a label and class probabilities (or a value) per input, for any module served alone
(ST-A, MT-A member, fusion, soft prompt); optionally a fusion's attention per layer and its top adapter."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from api.caches import Recent
from api.compositions import predict_composition, predict_per_row
from api.deps import Reader, RegistryDep
from api.errors import Problem
from api.loaders import Lease, ensure
from api.schemas import InputRow, examples, render
from composer import kinds
from composer.data import TaskSpec
from registry_db.errors import NotFound
from registry_db.models import Adapter, BaseModelRow
from registry_db.repo import adapters, catalog
from service.catalog import task_spec

router = APIRouter(prefix="/v1", tags=["predict"])


COMPOSITION_EXAMPLES = [
    {"stack": ["ad_domain", "ad_task"]},
    {"average": ["ad_a", "ad_b"], "weights": [0.7, 0.3], "head": "ad_a"},
    {"stack": ["ad_lang", {"average": ["ad_a", "ad_b"]}], "head": "ad_b"},
    {"stack": ["ad_domain", {"fuse": "ad_fusion"}]},
    {"parallel": ["ad_sentiment", {"stack": ["ad_lang", "ad_topic"]}]},
]


class PredictRow(InputRow):
    composition: dict[str, Any] | None = Field(
        None,
        description="this row's own tree (the grammar of `composition`, without parallel), when the request "
        "names neither `adapter` nor `composition`: every row then carries one, and all run in one forward",
        json_schema_extra={"examples": COMPOSITION_EXAMPLES[:4]},
    )


class PredictIn(BaseModel):
    adapter: str | None = Field(None, description="an id, name:version or task@alias")
    composition: dict[str, Any] | None = Field(
        None,
        description="instead of `adapter`: a tree of registered adapters. A leaf is a reference; "
        '{"stack": [node, …], "head": ref} runs its members in order at every site (the head is the last '
        'member\'s unless named); {"average": [node, …], "weights": [w, …], "head": ref} mixes their outputs '
        '(weights normalised; equal if none; the head is named); {"fuse": ref} runs a registered fusion; '
        '{"parallel": [node, …]} (top level only) answers each branch with its own head. A stack holds '
        "references, averages and fusions; an average holds references and stacks (adapters 1.3.0's rules); "
        "at most 8 deep and 16 members.",
        json_schema_extra={"examples": COMPOSITION_EXAMPLES},
    )
    inputs: list[PredictRow] = Field(min_length=1, max_length=256)
    return_fusion_attention: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> PredictIn:
        per_row = [r.composition is not None for r in self.inputs]
        if self.adapter is None and self.composition is None:
            if not all(per_row):
                raise ValueError("give `adapter` or `composition`, or a `composition` in every input row")
        elif self.adapter is not None and self.composition is not None:
            raise ValueError("give either `adapter` or `composition`")
        elif any(per_row):
            raise ValueError("a row's own `composition` is for requests that name neither `adapter` nor `composition`")
        return self


@dataclass(frozen=True)
class Facts:
    """What never changes about a registered module once it exists: its task, base and fusion members."""

    spec: TaskSpec
    base_row: BaseModelRow
    members: list[Adapter]


def remembered(request: Request, caller, body: PredictIn) -> tuple[Adapter, Facts] | None:  # type: ignore[no-untyped-def]
    """The row this process resolved the reference to (until the registry's reference epoch moves, or an
    archive or alias move here) and its facts; None: read the registry."""
    row = request.app.state.adapter_refs.get((caller.owner_id, body.adapter))
    facts = request.app.state.module_facts.get(row.id) if row is not None else None
    return None if facts is None else (row, facts)


def leased(request: Request, caller, body: PredictIn):  # type: ignore[no-untyped-def]
    """A warm request's way, on the event loop: its reference remembered, its module and members attached.
    No registry read, no thread hop. None: take `resolve`."""
    known = remembered(request, caller, body)
    if known is None:
        return None
    (row, facts), runtime = known, request.app.state.runtime
    members = [m.id for m in facts.members]
    res = runtime.lease_loaded(facts.base_row.id, row.id, members)  # None once archived here, or not loaded
    if res is None:
        return None
    return row, facts.spec, members, Lease(runtime, res, row.id, members)


def resolve(request: Request, reg, caller, body: PredictIn):  # type: ignore[no-untyped-def]
    """Everything that can fail for this request alone happens here, before it joins a batch. A remembered
    reference whose module is not attached (evicted, say) loads it without a registry read."""
    known = remembered(request, caller, body)
    if known is None or known[0].id in request.app.state.runtime.retired:
        known = read(request, reg, caller, body)
    row, facts = known
    if kinds.get(row.kind).composed:  # a saved composition: no module of its own; it serves through its tree
        return row, facts.spec, [], None
    settings = request.app.state.settings
    lease = ensure(request.app.state.runtime, reg, row, facts.base_row, facts.members, settings.device)
    return row, facts.spec, [m.id for m in facts.members], lease


def read(request: Request, reg, caller, body: PredictIn) -> tuple[Adapter, Facts]:  # type: ignore[no-untyped-def]
    """The adapter row (its status, an alias's target) from the registry; its task, base and members once per
    process. A row that serves is remembered."""
    cache: Recent[str, Facts] = request.app.state.module_facts
    refs = request.app.state.adapter_refs
    generation = refs.generation  # an archive or alias move during this read keeps its row out
    with reg.tx() as s:
        try:
            row = adapters.resolve_adapter(s, caller.owner_id, body.adapter)
        except NotFound:
            try:
                adapters.get_ensemble(s, caller.owner_id, body.adapter)
            except NotFound:
                raise Problem(404, "not-found", f"adapter {body.adapter!r} not found") from None
            raise Problem(
                422,
                "wrong-endpoint",
                f"{body.adapter} is a prompt ensemble; query it with POST /v1/ensembles/{body.adapter}/predict",
                field="adapter",
            ) from None
        facts = cache.get(row.id)
        if facts is None:
            task = catalog.get_task(s, row.owner_id, row.task_id)
            facts = Facts(
                task_spec(task), catalog.get_base_model(s, row.base_model_id), adapters.fusion_members(s, row.id)
            )
            cache.put(row.id, facts)
    if row.status == "archived":  # archived through another process: what this one holds of it goes too
        refs.drop(lambda r: r.id == row.id)
        request.app.state.runtime.retire(row.id)
        raise Problem(
            404, "archived", f"adapter {row.id} is archived: it no longer serves (its row and lineage remain)"
        )
    if row.id in request.app.state.runtime.retired:  # restored through another process
        request.app.state.runtime.unretire(row.id)
    refs.put((caller.owner_id, body.adapter), row, generation)
    return row, facts


@router.post("/predict", responses={503: {"content": {"application/problem+json": {}}}})
async def predict(body: PredictIn, request: Request, caller: Reader, reg: RegistryDep) -> dict:
    t0 = time.perf_counter()
    request.app.state.limiter.take(caller.key_id)
    if body.composition is not None:
        return await run_in_threadpool(
            predict_composition, request, reg, caller, body.composition, examples(body.inputs)
        )
    if body.adapter is None:  # every row its own tree
        rows = [r.composition for r in body.inputs]
        return await run_in_threadpool(predict_per_row, request, reg, caller, rows, examples(body.inputs))
    batcher = request.app.state.batcher
    batcher.expect()
    try:
        found = leased(request, caller, body) or await run_in_threadpool(resolve, request, reg, caller, body)
    except BaseException:
        batcher.gone()
        raise
    row, spec, members, lease = found
    if lease is None:
        batcher.gone()
        raw = row.method_config["composition"]
        return await run_in_threadpool(predict_composition, request, reg, caller, raw, examples(body.inputs), saved=row)
    with lease:
        if not request.app.state.runtime.serves(row.id):
            batcher.gone()
            raise Problem(
                422,
                "no-head",
                f"adapter {row.id} has no head to predict through: it serves as a member of a fusion",
                field="adapter",
            )
        inputs = examples(body.inputs)
        if body.return_fusion_attention and members:  # inspection requests run alone
            batcher.gone()
            rows = [(row.id, e) for e in inputs]
            outputs = await run_in_threadpool(request.app.state.runtime.predict, lease.resident, rows, True)
        else:
            outputs = await batcher.submit(lease.resident, row.id, inputs)
    request.app.state.adapter_metrics.observe(row.id, time.perf_counter() - t0)
    return render(row, spec, members, outputs)
