"""Base models, tasks and datasets (datasets are deduplicated by content)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from registry_db.errors import Conflict, InvalidInput, NotFound
from registry_db.models import SPLITS, TASK_KINDS, Adapter, BaseModelRow, Dataset, Job, Owner, Task
from registry_db.repo.common import Page, flush_unique, paginate

METRICS = {"classification": ("accuracy", "macro_f1", "mcc"), "regression": ("pearson", "spearman")}


def register_base_model(s: Session, **fields: Any) -> tuple[BaseModelRow, bool]:
    """Idempotent by identity: returns (row, created)."""
    existing = s.scalars(select(BaseModelRow).where(BaseModelRow.identity == fields["identity"])).first()
    if existing is not None:
        return existing, False
    if int(fields.get("hidden_size", 0)) <= 0:
        raise InvalidInput("hidden_size must be positive")
    row = BaseModelRow(**fields)
    s.add(row)
    flush_unique(s, f"a base model named {fields.get('name')!r} already exists with another identity")
    return row, True


def get_base_model(s: Session, ref: str, owner_id: str | None = None) -> BaseModelRow:
    """By id or name. With `owner_id`, a derived base of another owner does not exist for the caller."""
    row = s.get(BaseModelRow, ref) or s.scalars(select(BaseModelRow).where(BaseModelRow.name == ref)).first()
    if row is None or (owner_id is not None and row.owner_id not in (None, owner_id)):
        raise NotFound(f"base model {ref!r} does not exist")
    return row


def list_base_models(s: Session, owner_id: str | None = None) -> list[BaseModelRow]:
    """Every base (an operator's view), or the shared ones plus `owner_id`'s derived ones."""
    q = select(BaseModelRow).order_by(BaseModelRow.name)
    if owner_id is not None:
        q = q.where(or_(BaseModelRow.owner_id.is_(None), BaseModelRow.owner_id == owner_id))
    return list(s.scalars(q).all())


def create_task(s: Session, owner_id: str, name: str, kind: str, labels: list[str], metric: str | None = None) -> Task:
    if kind not in TASK_KINDS:
        raise InvalidInput(f"kind must be one of {list(TASK_KINDS)}, got {kind!r}")
    labels = [str(x) for x in labels]
    if len(set(labels)) != len(labels):
        raise InvalidInput(f"label set has duplicates: {sorted({x for x in labels if labels.count(x) > 1})}")
    if kind == "classification" and len(labels) < 2:
        raise InvalidInput("a classification task needs at least 2 labels")
    if kind == "regression" and labels:
        raise InvalidInput("a regression task has no label set")
    metric = metric or METRICS[kind][0]
    if metric not in METRICS[kind]:
        raise InvalidInput(f"metric {metric!r} does not apply to {kind}; use one of {list(METRICS[kind])}")
    if s.get(Owner, owner_id) is None:
        raise NotFound(f"owner {owner_id} does not exist")
    task = Task(owner_id=owner_id, name=name, kind=kind, labels=labels, metric=metric)
    s.add(task)
    flush_unique(s, f"task {name!r} already exists")
    return task


def get_task(s: Session, owner_id: str, name_or_id: str) -> Task:
    task = s.get(Task, name_or_id)
    if task is None or task.owner_id != owner_id:
        task = s.scalars(select(Task).where(Task.owner_id == owner_id, Task.name == name_or_id)).first()
    if task is None:
        raise NotFound(f"task {name_or_id!r} not found")
    return task


def list_tasks(s: Session, owner_id: str) -> list[Task]:
    return list(s.scalars(select(Task).where(Task.owner_id == owner_id).order_by(Task.name)).all())


def add_dataset(
    s: Session, task_id: str, split: str, fmt: str, sha256: str, row_count: int, histogram: dict[str, int]
) -> tuple[Dataset, bool]:
    """Register an uploaded file (already in the blob store). The same file twice returns the same row."""
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {list(SPLITS)}, got {split!r}")
    if s.get(Task, task_id) is None:
        raise NotFound(f"task {task_id} does not exist")
    existing = s.scalars(
        select(Dataset).where(Dataset.task_id == task_id, Dataset.split == split, Dataset.sha256 == sha256)
    ).first()
    if existing is not None:
        return existing, False
    ds = Dataset(
        task_id=task_id, split=split, format=fmt, sha256=sha256, row_count=row_count, label_histogram=histogram
    )
    s.add(ds)
    flush_unique(s, "this dataset was registered concurrently")
    return ds, True


def get_dataset(s: Session, dataset_id: str, owner_id: str | None = None, lock: bool = False) -> Dataset:
    """`lock`: hold the row (FOR SHARE on PostgreSQL) until the transaction ends, so that a job submitted
    against it and the dataset's deletion cannot both commit."""
    ds = s.get(Dataset, dataset_id, with_for_update={"read": True} if lock else None)
    if ds is None or (owner_id is not None and s.get(Task, ds.task_id).owner_id != owner_id):  # type: ignore[union-attr]
        raise NotFound(f"dataset {dataset_id} not found")
    return ds


def list_datasets(
    s: Session, owner_id: str, task: str, split: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[Dataset]:
    """A task's datasets, newest first."""
    t = get_task(s, owner_id, task)
    stmt = select(Dataset).where(Dataset.task_id == t.id)
    if split is not None:
        if split not in SPLITS:
            raise InvalidInput(f"split must be one of {list(SPLITS)}, got {split!r}")
        stmt = stmt.where(Dataset.split == split)
    return paginate(s, stmt, Dataset, limit, cursor)


def _mentions(value: Any, wanted: str) -> bool:
    if isinstance(value, dict):
        return any(_mentions(v, wanted) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, wanted) for v in value)
    return value == wanted


def dataset_users(s: Session, owner_id: str, dataset_id: str) -> list[str]:
    """What still uses a dataset: jobs queued or running on it, and the live adapters (training or ready)
    that jobs on it produced. A finished job whose adapter was archived no longer holds it."""
    jobs = s.scalars(select(Job).where(Job.owner_id == owner_id, cast(Job.spec, String).contains(dataset_id))).all()
    jobs = [j for j in jobs if _mentions(j.spec, dataset_id)]
    users = [f"job {j.id} ({j.status})" for j in jobs if j.status in ("queued", "running")]
    if jobs:
        live = s.scalars(
            select(Adapter).where(Adapter.job_id.in_([j.id for j in jobs]), Adapter.status.in_(("training", "ready")))
        ).all()
        users += [f"adapter {a.id} ({a.kind} {a.name} v{a.version})" for a in live]
    return users


def delete_dataset(s: Session, owner_id: str, dataset_id: str) -> Dataset:
    """Remove a dataset's row; refused while a job or adapter uses it. Its blob goes with the next GC."""
    ds = get_dataset(s, dataset_id, owner_id)
    s.refresh(ds, with_for_update=True)  # a concurrent submit holds it FOR SHARE: one of the two waits
    users = dataset_users(s, owner_id, dataset_id)
    if users:
        shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
        raise Conflict(f"dataset {dataset_id} is in use: {shown}")
    s.delete(ds)
    s.flush()
    return ds
