"""Request bodies and response shapes shared by several routes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from composer.data import Example
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
