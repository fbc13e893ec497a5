"""Task datasets: JSONL/CSV rows with `text`, optional `text_pair`, and `label`.

Rows are validated with errors that carry the line number. Tokenisation uses the base
model's tokenizer with dynamic padding (each batch pads to its own longest row).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from composer.errors import ConfigError, DataError

TaskKind = Literal["classification", "regression"]


@dataclass(frozen=True)
class TaskSpec:
    name: str = "task"
    kind: TaskKind = "classification"
    labels: tuple[str, ...] = ()
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.kind not in ("classification", "regression"):
            raise ConfigError(f"task kind must be classification or regression, got {self.kind!r}")
        if len(set(self.labels)) != len(self.labels):
            dupes = sorted(k for k, c in Counter(self.labels).items() if c > 1)
            raise ConfigError(f"duplicate labels in label set: {dupes}")
        if self.kind == "classification" and len(self.labels) < 2:
            raise ConfigError("a classification task needs at least 2 labels")

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    def label_index(self, label: Any) -> int:
        return self.labels.index(str(label))


@dataclass(frozen=True)
class Example:
    text: str
    label: str | float | None = None
    text_pair: str | None = None


def _check_row(row: dict[str, Any], line: int, task: TaskSpec | None, need_label: bool) -> Example:
    if not isinstance(row, dict):
        raise DataError("a row must be an object with 'text' and 'label'", line)
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError("'text' is missing or empty", line)
    pair = row.get("text_pair") or None  # an empty CSV cell means "no pair"
    if pair is not None and (not isinstance(pair, str) or not pair.strip()):
        raise DataError("'text_pair' must be a non-empty string when given", line)
    label = row.get("label")
    if label is None or (isinstance(label, str) and not label.strip()):
        if need_label:
            raise DataError("'label' is missing", line)
        return Example(text=text, text_pair=pair or None)
    if task is not None and task.kind == "regression":
        try:
            value = float(label)
        except (TypeError, ValueError):
            raise DataError(f"regression label must be a number, got {label!r}", line) from None
        if not math.isfinite(value):
            raise DataError(f"regression label must be finite, got {label!r}", line)
        return Example(text=text, text_pair=pair or None, label=value)
    if isinstance(label, bool | dict | list) or (isinstance(label, float) and not label.is_integer()):
        raise DataError(f"class label must be a string, got {label!r}", line)
    label_s = str(int(label)) if isinstance(label, float) else str(label)
    if task is not None and task.labels and label_s not in task.labels:
        raise DataError(f"label {label_s!r} is not in the task's label set {list(task.labels)}", line)
    return Example(text=text, text_pair=pair or None, label=label_s)


def parse_examples(
    data: bytes | str, fmt: Literal["jsonl", "csv"], task: TaskSpec | None = None, need_label: bool = True
) -> list[Example]:
    """Parse and validate a whole file. Raises DataError at the first bad row."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    examples: list[Example] = []
    if fmt == "jsonl":
        for i, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e.msg}", i) from None
            examples.append(_check_row(row, i, task, need_label))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))  # csv reads \r, \n and \r\n itself
        try:
            fieldnames = reader.fieldnames
        except csv.Error as e:
            raise DataError(f"malformed CSV header: {e}", 1) from None
        if fieldnames is None or "text" not in fieldnames:
            raise DataError("CSV needs a header with a 'text' column (and 'label')", 1)
        if need_label and "label" not in fieldnames:
            raise DataError("CSV header has no 'label' column", 1)
        try:
            for row in reader:
                examples.append(_check_row(row, reader.line_num, task, need_label))
        except csv.Error as e:
            raise DataError(f"malformed CSV: {e}", reader.line_num) from None
    else:
        raise DataError(f"unknown format {fmt!r}; use jsonl or csv")
    if not examples:
        raise DataError("the file holds no rows")
    return examples


def read_examples(path: str | Path, task: TaskSpec | None = None) -> list[Example]:
    path = Path(path)
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    return parse_examples(path.read_bytes(), fmt, task)  # type: ignore[arg-type]


def infer_task(examples: Sequence[Example], name: str = "task") -> TaskSpec:
    """A classification task over the sorted label set of the examples."""
    return TaskSpec(name=name, labels=tuple(sorted({str(e.label) for e in examples})))


def label_histogram(examples: Sequence[Example]) -> dict[str, int]:
    return dict(sorted(Counter(str(e.label) for e in examples).items()))


class Collator:
    """Tokenise a list of examples into a padded batch (dynamic padding)."""

    def __init__(self, tokenizer: Any, task: TaskSpec, max_length: int = 128):
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        texts = [e.text for e in examples]
        pairs = [e.text_pair for e in examples]
        has_pair = any(p is not None for p in pairs)
        enc = self.tokenizer(
            texts,
            [p or "" for p in pairs] if has_pair else None,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if all(e.label is not None for e in examples):
            if self.task.kind == "regression":
                batch["labels"] = torch.tensor([float(e.label) for e in examples], dtype=torch.float32)  # type: ignore[arg-type]
            else:
                batch["labels"] = torch.tensor([self.task.label_index(e.label) for e in examples], dtype=torch.long)
        return batch


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The example order of one epoch; a pure function of (seed, epoch) so a resumed run sees the same order."""
    if not shuffle:
        return list(range(n))
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
