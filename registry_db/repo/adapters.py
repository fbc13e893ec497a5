"""Adapters: registration with per-name version numbers, lineage, sets, aliases and resolution."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry_db.errors import Conflict, InvalidInput, NotFound
from registry_db.models import (
    ADAPTER_KINDS,
    Adapter,
    AdapterSet,
    AdapterSetMember,
    Alias,
    AliasHistory,
    BaseModelRow,
    FusionMember,
    Job,
    ReferenceEpoch,
    Task,
    utcnow,
)
from registry_db.repo.common import Page, flush_unique, paginate

ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,99}$")


def register_adapter(
    s: Session,
    *,
    owner_id: str,
    task_id: str,
    base_model_id: str,
    kind: str,
    name: str,
    method_config: dict[str, Any],
    hidden_size: int,
    blob_sha256: str | None = None,
    config_sha256: str | None = None,
    param_count: int = 0,
    stored_bytes: int = 0,
    metrics: dict[str, Any] | None = None,
    job_id: str | None = None,
    status: str = "ready",
    visibility: str = "private",
    version: int | None = None,
) -> Adapter:
    """Insert an adapter row. Without `version`, takes the next number for (owner, task, kind, name);
    two writers claiming the same number end with one row and a Conflict for the other."""
    if kind not in ADAPTER_KINDS:
        raise InvalidInput(f"kind must be one of {list(ADAPTER_KINDS)}, got {kind!r}")
    task = s.get(Task, task_id)
    if task is None or task.owner_id != owner_id:
        raise NotFound(f"task {task_id} not found")
    base = s.get(BaseModelRow, base_model_id)
    if base is None:
        raise NotFound(f"base model {base_model_id} does not exist")
    if hidden_size != base.hidden_size:
        raise InvalidInput(f"adapter hidden size {hidden_size} does not match base {base.name!r} ({base.hidden_size})")
    if job_id is not None and s.get(Job, job_id) is None:
        raise NotFound(f"job {job_id} does not exist")
    if version is None:
        current = s.scalar(
            select(func.max(Adapter.version)).where(
                Adapter.owner_id == owner_id, Adapter.task_id == task_id, Adapter.kind == kind, Adapter.name == name
            )
        )
        version = (current or 0) + 1
    row = Adapter(
        owner_id=owner_id,
        task_id=task_id,
        base_model_id=base_model_id,
        kind=kind,
        name=name,
        version=version,
        status=status,
        method_config=method_config,
        blob_sha256=blob_sha256,
        config_sha256=config_sha256,
        param_count=param_count,
        stored_bytes=stored_bytes,
        metrics=metrics or {},
        job_id=job_id,
        visibility=visibility,
    )
    s.add(row)
    flush_unique(s, f"version {version} of {kind} {name!r} was registered concurrently; retry")
    references_changed(s)  # a new `name:version` can make one that resolved ambiguous
    return row


def references_changed(s: Session) -> None:
    """Every write that changes what an adapter reference resolves to calls this in its transaction."""
    bumped = s.execute(update(ReferenceEpoch).where(ReferenceEpoch.id == 1).values(serial=ReferenceEpoch.serial + 1))
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        s.add(ReferenceEpoch(id=1, serial=1))
        s.flush()


def reference_epoch(s: Session) -> int:
    """The serial `references_changed` moves: equal at two reads, no reference changed in between."""
    return s.scalar(select(ReferenceEpoch.serial).where(ReferenceEpoch.id == 1)) or 0


def visible(viewer_owner_id: str):  # type: ignore[no-untyped-def]
    return or_(Adapter.owner_id == viewer_owner_id, Adapter.visibility == "public")


def owned_ids(s: Session, owner_id: str, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    return set(s.scalars(select(Adapter.id).where(Adapter.id.in_(ids), Adapter.owner_id == owner_id)).all())


def get_adapter(s: Session, adapter_id: str, viewer_owner_id: str | None = None) -> Adapter:
    row = s.get(Adapter, adapter_id)
    hidden = row is not None and viewer_owner_id is not None
    if row is None or (hidden and row.owner_id != viewer_owner_id and row.visibility != "public"):
        raise NotFound(f"adapter {adapter_id!r} not found")  # another owner's private adapter: 404, never 403
    return row


def list_adapters(
    s: Session,
    viewer_owner_id: str,
    *,
    task_id: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Adapter]:
    stmt = select(Adapter).where(visible(viewer_owner_id))
    if task_id:
        stmt = stmt.where(Adapter.task_id == task_id)
    if kind:
        stmt = stmt.where(Adapter.kind == kind)
    if status:
        stmt = stmt.where(Adapter.status == status)
    return paginate(s, stmt, Adapter, limit, cursor)


def servable(s: Session, limit: int = 100_000) -> list[Adapter]:
    """Ready modules of every owner, the most recently registered first: what a serving process may prefetch."""
    stmt = select(Adapter).where(Adapter.status == "ready").order_by(Adapter.created_at.desc()).limit(limit)
    return list(s.scalars(stmt).all())


def resolve_adapter(s: Session, viewer_owner_id: str, ref: str) -> Adapter:
    """Resolve an id, `name:version` or `task@alias` to an adapter the viewer may see."""
    if "@" in ref:
        task_name, alias = ref.rsplit("@", 1)
        row = s.execute(
            select(Alias)
            .join(Task, Task.id == Alias.task_id)
            .where(Alias.owner_id == viewer_owner_id, Task.name == task_name, Alias.alias == alias)
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"alias {ref!r} not found")
        return get_adapter(s, row.adapter_id, viewer_owner_id)
    if ":" in ref:
        name, _, version = ref.rpartition(":")
        if not version.isdigit():
            raise InvalidInput(f"bad adapter reference {ref!r}; use an id, name:version or task@alias")
        rows = s.scalars(
            select(Adapter).where(visible(viewer_owner_id), Adapter.name == name, Adapter.version == int(version))
        ).all()
        if not rows:
            raise NotFound(f"adapter {ref!r} not found")
        if len(rows) > 1:
            raise Conflict(f"{ref!r} is ambiguous ({len(rows)} adapters); use an id")
        return rows[0]
    return get_adapter(s, ref, viewer_owner_id)


def add_fusion_members(s: Session, fusion_id: str, adapter_ids: list[str]) -> None:
    if len(set(adapter_ids)) != len(adapter_ids):
        raise InvalidInput("a fusion lists each adapter once")
    for i, aid in enumerate(adapter_ids):
        if s.get(Adapter, aid) is None:
            raise NotFound(f"adapter {aid} does not exist")
        s.add(FusionMember(fusion_id=fusion_id, position=i, adapter_id=aid))
    flush_unique(s, "fusion members already recorded")


def fusion_members(s: Session, fusion_id: str) -> list[Adapter]:
    rows = s.scalars(select(FusionMember).where(FusionMember.fusion_id == fusion_id).order_by(FusionMember.position))
    return [s.get(Adapter, r.adapter_id) for r in rows]  # type: ignore[misc]


def create_set(
    s: Session,
    *,
    owner_id: str,
    kind: str,
    name: str,
    adapter_ids: list[str],
    task_id: str | None = None,
    voting: str | None = None,
    job_id: str | None = None,
) -> AdapterSet:
    if len(set(adapter_ids)) != len(adapter_ids):
        raise InvalidInput("a set lists each adapter once")
    row = AdapterSet(owner_id=owner_id, kind=kind, name=name, task_id=task_id, voting=voting, job_id=job_id)
    s.add(row)
    flush_unique(s, f"a {kind} set named {name!r} already exists")
    for i, aid in enumerate(adapter_ids):
        get_adapter(s, aid, owner_id)
        s.add(AdapterSetMember(set_id=row.id, position=i, adapter_id=aid))
    s.flush()
    return row


def get_ensemble(s: Session, owner_id: str, ensemble_id: str) -> AdapterSet:
    e = s.get(AdapterSet, ensemble_id)
    if e is None or e.kind != "ensemble" or e.owner_id != owner_id:
        raise NotFound(f"ensemble {ensemble_id!r} not found")
    return e


def list_ensembles(s: Session, owner_id: str, task_id: str | None = None) -> list[AdapterSet]:
    stmt = select(AdapterSet).where(AdapterSet.owner_id == owner_id, AdapterSet.kind == "ensemble")
    if task_id is not None:
        stmt = stmt.where(AdapterSet.task_id == task_id)
    return list(s.scalars(stmt.order_by(AdapterSet.created_at)).all())


def set_members(s: Session, set_id: str) -> list[Adapter]:
    rows = s.scalars(
        select(AdapterSetMember).where(AdapterSetMember.set_id == set_id).order_by(AdapterSetMember.position)
    )
    return [s.get(Adapter, r.adapter_id) for r in rows]  # type: ignore[misc]


def sets_of(s: Session, adapter_id: str) -> list[AdapterSet]:
    ids = select(AdapterSetMember.set_id).where(AdapterSetMember.adapter_id == adapter_id)
    return list(s.scalars(select(AdapterSet).where(AdapterSet.id.in_(ids))).all())


def set_alias(s: Session, owner_id: str, task_id: str, alias: str, adapter_id: str) -> Alias:
    if not ALIAS_RE.match(alias):
        raise InvalidInput("an alias is lowercase letters, digits, '-' and '_', starting with a letter")
    adapter = get_adapter(s, adapter_id, owner_id)
    if adapter.task_id != task_id:
        raise InvalidInput(f"adapter {adapter_id} belongs to another task")
    row = s.scalars(
        select(Alias).where(Alias.owner_id == owner_id, Alias.task_id == task_id, Alias.alias == alias)
    ).first()
    if row is None:
        row = Alias(owner_id=owner_id, task_id=task_id, alias=alias, adapter_id=adapter_id)
        s.add(row)
        flush_unique(s, f"alias {alias!r} was created concurrently; retry")
    else:
        row.adapter_id, row.updated_at = adapter_id, utcnow()
    s.add(AliasHistory(alias_id=row.id, adapter_id=adapter_id))
    s.flush()
    references_changed(s)
    return row


def alias_history(s: Session, alias_id: str) -> list[AliasHistory]:
    stmt = select(AliasHistory).where(AliasHistory.alias_id == alias_id).order_by(AliasHistory.id)
    return list(s.scalars(stmt).all())


def archive_adapter(s: Session, adapter_id: str, owner_id: str) -> Adapter:
    row = get_adapter(s, adapter_id, owner_id)
    if row.owner_id != owner_id:
        raise NotFound(f"adapter {adapter_id!r} not found")
    row.status = "archived"
    references_changed(s)
    return row


def restore_adapter(s: Session, adapter_id: str, owner_id: str) -> Adapter:
    """An archived adapter serves again (its blobs were never deleted); restoring one that is not archived
    is a conflict."""
    row = get_adapter(s, adapter_id, owner_id)
    if row.owner_id != owner_id:
        raise NotFound(f"adapter {adapter_id!r} not found")
    if row.status != "archived":
        raise Conflict(f"adapter {adapter_id} is {row.status}, not archived: there is nothing to restore")
    row.status = "ready"
    references_changed(s)
    return row
