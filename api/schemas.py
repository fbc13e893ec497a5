"""Request bodies and response shapes shared by several routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from composer.data import Example, TaskSpec
from composer.serving import RowOutput
from registry_db.models import Dataset


class InputRow(BaseModel):
    text: str = Field(min_length=1, max_length=20000)
    text_pair: str | None = Field(None, min_length=1, max_length=20000)


def examples(rows: list[InputRow]) -> list[Example]:
    return [Example(r.text, None, r.text_pair) for r in rows]


def dataset_json(d: Dataset) -> dict:
    return {
        "id": d.id,
        "task_id": d.task_id,
        "split": d.split,
        "format": d.format,
        "sha256": d.sha256,
        "row_count": d.row_count,
        "label_histogram": d.label_histogram,
        "created_at": d.created_at.isoformat(),
    }


def render(row, spec: TaskSpec, members: list[str], outputs: list[RowOutput]) -> dict:  # type: ignore[no-untyped-def]
    out = []
    for o in outputs:
        if spec.kind == "regression":
            item = {"value": float(o.logits)}
        else:
            probs = o.logits.softmax(-1).tolist()
            item = {
                "label": spec.labels[max(range(len(probs)), key=probs.__getitem__)],
                "probabilities": dict(zip(spec.labels, [round(p, 6) for p in probs], strict=True)),
            }
        if o.attention:
            layers = {k: [round(float(v), 4) for v in a] for k, a in o.attention.items()}
            mean = [sum(v[j] for v in layers.values()) / len(layers) for j in range(len(members))]
            item["fusion_attention"] = {
                "adapters": members,
                "layers": layers,
                "top_adapter": members[max(range(len(mean)), key=mean.__getitem__)],
            }
        out.append(item)
    return {"adapter_id": row.id, "kind": row.kind, "outputs": out}
