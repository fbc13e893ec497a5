"""POST /v1/predict: a label and class probabilities (or a value) per input, for an ST-A, MT-A member
or fusion; optionally the fusion attention per layer and the adapter that got the most weight."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Reader, RegistryDep
from api.errors import Problem
from api.loaders import ensure
from composer.data import Example
from registry_db.repo import adapters, catalog
from workers.catalog import task_spec

router = APIRouter(tags=["predict"])


class InputRow(BaseModel):
    text: str = Field(min_length=1, max_length=20000)
    text_pair: str | None = Field(None, min_length=1, max_length=20000)


class PredictIn(BaseModel):
    adapter: str = Field(description="an id, name:version or task@alias")
    inputs: list[InputRow] = Field(min_length=1, max_length=256)
    return_fusion_attention: bool = False


def resolve(request: Request, reg, caller, body: PredictIn):  # type: ignore[no-untyped-def]
    """Everything that can fail for this request alone happens here, before it joins a batch."""
    with reg.tx() as s:
        row = adapters.resolve_adapter(s, caller.owner_id, body.adapter)
        task = catalog.get_task(s, row.owner_id, row.task_id)
        member_rows = adapters.fusion_members(s, row.id) if row.kind == "fusion" else []
        members = [m.id for m in member_rows]
        base_row = catalog.get_base_model(s, row.base_model_id)
    if row.status == "archived":
        raise Problem(409, "archived", f"adapter {row.id} is archived")
    if row.kind == "soft_prompt":
        raise Problem(422, "use-ensemble", "soft prompts are served through /v1/ensembles/{id}/predict")
    res = ensure(request.app.state.runtime, reg, row, request.app.state.settings.device, base_row, member_rows)
    return row, task_spec(task), members, res


def render(row, spec, members, logits, attention) -> dict:  # type: ignore[no-untyped-def]
    out = []
    for i in range(len(logits)):
        if spec.kind == "regression":
            item = {"value": float(logits[i])}
        else:
            probs = logits[i].softmax(-1)
            item = {
                "label": spec.labels[int(probs.argmax())],
                "probabilities": dict(zip(spec.labels, [round(float(p), 6) for p in probs], strict=True)),
            }
        if attention:
            layers = {k: [round(float(v), 4) for v in a[i]] for k, a in attention.items()}
            mean = [sum(v[j] for v in layers.values()) / len(layers) for j in range(len(members))]
            item["fusion_attention"] = {"adapters": members, "layers": layers,
                                        "top_adapter": members[max(range(len(mean)), key=mean.__getitem__)]}  # fmt: skip
        out.append(item)
    return {"adapter_id": row.id, "kind": row.kind, "outputs": out}


@router.post("/predict", responses={503: {"content": {"application/problem+json": {}}}})
async def predict(body: PredictIn, request: Request, caller: Reader, reg: RegistryDep) -> dict:
    batcher = request.app.state.batcher
    batcher.expect()
    try:
        row, spec, members, res = await run_in_threadpool(resolve, request, reg, caller, body)
    except BaseException:
        batcher.gone()
        raise
    inputs = [Example(r.text, None, r.text_pair) for r in body.inputs]
    if body.return_fusion_attention and row.kind == "fusion":  # inspection requests run alone
        batcher.gone()
        rt = request.app.state.runtime
        logits, attention = await run_in_threadpool(rt.predict, res, row.id, spec, inputs, True, True)
        return render(row, spec, members, logits, attention)
    logits = await batcher.submit(res, row.id, row.kind == "fusion", inputs)
    return render(row, spec, members, logits, None)
