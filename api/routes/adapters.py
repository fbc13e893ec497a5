"""Adapters: list, get (with lineage), download, import, archive, aliases, and what is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.archives import make_zip, read_zip
from api.deps import Reader, RegistryDep, Trainer
from api.errors import Problem
from api.imports import register_import
from api.loaders import adapter_json, resident
from composer import kinds
from composer.errors import ComposerError
from composer.exporting import Target
from registry_db.repo import adapters, catalog
from service import artifact_store

router = APIRouter(prefix="/v1", tags=["adapters"])


def with_lineage(s, row) -> dict:  # type: ignore[no-untyped-def]
    extra = {"sets": [{"id": x.id, "kind": x.kind, "name": x.name} for x in adapters.sets_of(s, row.id)]}
    members = adapters.fusion_members(s, row.id)
    if members:
        extra["members"] = [m.id for m in members]
    return adapter_json(row, **extra)


@router.get("/adapters")
def list_adapters(
    caller: Reader,
    reg: RegistryDep,
    task: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict:
    with reg.tx() as s:
        task_id = catalog.get_task(s, caller.owner_id, task).id if task else None
        page = adapters.list_adapters(
            s, caller.owner_id, task_id=task_id, kind=kind, status=status, limit=limit, cursor=cursor
        )
        return {"items": [adapter_json(a) for a in page.items], "next_cursor": page.next_cursor}


@router.get("/adapters/loaded")
def loaded(request: Request, caller: Reader, reg: RegistryDep) -> list[dict]:
    """The caller's modules resident in this replica's serving cache (never another owner's)."""
    resident = request.app.state.runtime.loaded()
    with reg.tx() as s:
        mine = adapters.owned_ids(s, caller.owner_id, [m["id"] for m in resident])
    return [m for m in resident if m["id"] in mine]


@router.get("/adapters/{ref}")
def get_adapter(ref: str, caller: Reader, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        return with_lineage(s, adapters.resolve_adapter(s, caller.owner_id, ref))


@router.get("/adapters/{ref}/download", response_class=Response)
def download(
    ref: str,
    caller: Reader,
    reg: RegistryDep,
    format: Literal["native", "adapterhub", "peft"] = "native",
    with_head: bool = True,
) -> Response:
    """The module as stored (`native`), or in AdapterHub's or PEFT's layout; a fusion with its members."""
    with reg.tx() as s:
        row = adapters.resolve_adapter(s, caller.owner_id, ref)
        base = catalog.get_base_model(s, row.base_model_id)
        members = adapters.fusion_members(s, row.id)
    if row.blob_sha256 is None or row.config_sha256 is None:
        raise Problem(404, "not-found", f"adapter {row.id} has no stored weights")
    face = kinds.get(row.kind)
    if format == "native":
        cfg_name, w_name = face.file_names
        files = {cfg_name: reg.blobs.get(row.config_sha256), w_name: reg.blobs.get(row.blob_sha256)}
    else:
        target = _target(base)
        art, member_arts = artifact_store.fetch(reg, row), [artifact_store.fetch(reg, m) for m in members]
        try:
            files = face.export(art, format, target, member_arts, with_head)
        except ComposerError as e:
            raise Problem(422, "unsupported-format", str(e), field="format") from None
    stem = f"{row.name.replace('/', '_')}-v{row.version}" + ("" if format == "native" else f"-{format}")
    return Response(
        make_zip(files),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{stem}.zip"'},
    )


def _target(base: Any) -> Target:
    """The base an export is for, with the widths its config.json gives (0 where it does not)."""
    try:
        cfg = json.loads((Path(base.path) / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    heads = int(cfg.get("num_attention_heads", cfg.get("n_heads", 0)) or 0)
    inner = int(cfg.get("intermediate_size", cfg.get("hidden_dim", 0)) or 0)
    return Target(base.name, base.architecture, base.num_layers, heads, inner)


@router.post("/adapters/import", status_code=201)
async def import_adapter(
    request: Request,
    caller: Trainer,
    reg: RegistryDep,
    file: UploadFile = File(...),
    task: str = Form(...),
    base_model: str = Form(...),
    name: str | None = Form(None),
) -> dict:
    settings = request.app.state.settings
    data = await file.read(int(settings.max_upload_mb * (1 << 20)) + 1)
    if len(data) > settings.max_upload_mb * (1 << 20):
        raise Problem(413, "payload-too-large", f"uploads are limited to {settings.max_upload_mb} MB")
    files = read_zip(data, int(settings.max_archive_mb * (1 << 20)))
    runtime, device = request.app.state.runtime, settings.device
    return await run_in_threadpool(
        register_import,
        reg,
        caller.owner_id,
        files,
        task,
        base_model,
        name,
        lambda base_row: resident(runtime, base_row, device, reg).base,
    )


def _status(ref: str, request: Request, caller, reg, change, serving) -> dict:  # type: ignore[no-untyped-def]
    """Archive or restore: the registry's change, then this process forgets the reference and tells its runtime."""
    with reg.tx() as s:
        row = change(s, adapters.resolve_adapter(s, caller.owner_id, ref).id, caller.owner_id)
        out = adapter_json(row)
    request.app.state.adapter_refs.drop(lambda r: r.id == row.id)
    serving(request.app.state.runtime, row.id)
    return out


@router.post("/adapters/{ref}/archive")
def archive(ref: str, request: Request, caller: Trainer, reg: RegistryDep) -> dict:
    return _status(ref, request, caller, reg, adapters.archive_adapter, lambda rt, i: rt.retire(i))


@router.post("/adapters/{ref}/restore")
def restore(ref: str, request: Request, caller: Trainer, reg: RegistryDep) -> dict:
    """An archived adapter serves again, with the weights it had."""
    return _status(ref, request, caller, reg, adapters.restore_adapter, lambda rt, i: rt.unretire(i))


class AliasIn(BaseModel):
    adapter: str
    force: bool = False  # move the alias to a fusion that scores below its best member anyway


@router.put("/adapters/aliases/{task}/{alias}")
def set_alias(task: str, alias: str, body: AliasIn, request: Request, caller: Trainer, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        t = catalog.get_task(s, caller.owner_id, task)
        row = adapters.resolve_adapter(s, caller.owner_id, body.adapter)
        cmp = (row.metrics or {}).get("comparison") or {}
        best, fused = cmp.get("best_member") or {}, cmp.get("fusion")
        if not body.force and best and fused is not None and fused < best["score"]:
            raise Problem(
                409,
                "worse-than-member",
                f"fusion {row.id} scores {fused:.4f} ({cmp['metric']}, validation), below its member {best['id']} "
                f'({best["score"]:.4f}); point {t.name}@{alias} at it anyway with "force": true',
                field="adapter",
            )
        al = adapters.set_alias(s, caller.owner_id, t.id, alias, row.id)
        history = [
            {"adapter_id": h.adapter_id, "assigned_at": h.assigned_at.isoformat()}
            for h in adapters.alias_history(s, al.id)
        ]
    # once committed, this process's requests for task@alias follow at once (the task's remembered rows go)
    request.app.state.adapter_refs.drop(lambda r: r.task_id == t.id)
    return {"task": t.name, "alias": alias, "adapter_id": row.id, "history": history}


__all__ = ["router"]
