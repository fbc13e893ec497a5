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


def predict_rows(request: Request, reg, caller, body: PredictIn) -> dict:  # type: ignore[no-untyped-def]
    with reg.tx() as s:
        row = adapters.resolve_adapter(s, caller.owner_id, body.adapter)
        task = catalog.get_task(s, row.owner_id, row.task_id)
        members = [m.id for m in adapters.fusion_members(s, row.id)] if row.kind == "fusion" else []
    if row.status == "archived":
        raise Problem(409, "archived", f"adapter {row.id} is archived")
    if row.kind == "soft_prompt":
        raise Problem(422, "use-ensemble", "soft prompts are served through /v1/ensembles/{id}/predict")
    rt = request.app.state.runtime
    res = ensure(rt, reg, row, request.app.state.settings.device)
    spec = task_spec(task)
    inputs = [Example(r.text, None, r.text_pair) for r in body.inputs]
    logits, attention = rt.predict(res, row.id, spec, inputs, fusion=row.kind == "fusion",
                                   return_attention=body.return_fusion_attention)  # fmt: skip
    out = []
    for i in range(len(inputs)):
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


@router.post("/predict")
async def predict(body: PredictIn, request: Request, caller: Reader, reg: RegistryDep) -> dict:
    return await run_in_threadpool(predict_rows, request, reg, caller, body)
