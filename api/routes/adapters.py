"""Adapters: list, get (with lineage), download, import, archive, aliases, and what is loaded."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.archives import make_zip, read_zip
from api.deps import Reader, RegistryDep, Trainer
from api.errors import Problem
from api.loaders import adapter_json, resident
from composer import kinds
from composer.base import BaseIdentity
from composer.errors import ArtifactError, ComposerError
from registry_db.repo import adapters, catalog
from workers import artifact_store
from workers.catalog import task_spec

router = APIRouter(tags=["adapters"])


def with_lineage(s, row) -> dict:  # type: ignore[no-untyped-def]
    extra = {"sets": [{"id": x.id, "kind": x.kind, "name": x.name} for x in adapters.sets_of(s, row.id)]}
    members = adapters.fusion_members(s, row.id)
    if members:
        extra["members"] = [m.id for m in members]
    return adapter_json(row, **extra)


@router.get("/adapters")
def list_adapters(caller: Reader, reg: RegistryDep, task: str | None = None, kind: str | None = None,
                  status: str | None = None, limit: int = 50, cursor: str | None = None) -> dict:  # fmt: skip
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
def download(ref: str, caller: Reader, reg: RegistryDep) -> Response:
    with reg.tx() as s:
        row = adapters.resolve_adapter(s, caller.owner_id, ref)
    if row.blob_sha256 is None or row.config_sha256 is None:
        raise Problem(404, "not-found", f"adapter {row.id} has no stored weights")
    cfg_name, w_name = kinds.get(row.kind).file_names
    data = make_zip({cfg_name: reg.blobs.get(row.config_sha256), w_name: reg.blobs.get(row.blob_sha256)})
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{row.name.replace("/", "_")}-v{row.version}.zip"'})  # fmt: skip


@router.post("/adapters/import", status_code=201)
async def import_adapter(request: Request, caller: Trainer, reg: RegistryDep, file: UploadFile = File(...),
                         task: str = Form(...), base_model: str = Form(...), name: str | None = Form(None)) -> dict:  # fmt: skip
    settings = request.app.state.settings
    data = await file.read(int(settings.max_upload_mb * (1 << 20)) + 1)
    if len(data) > settings.max_upload_mb * (1 << 20):
        raise Problem(413, "payload-too-large", f"uploads are limited to {settings.max_upload_mb} MB")
    files = read_zip(data, int(settings.max_archive_mb * (1 << 20)))
    runtime, device = request.app.state.runtime, settings.device
    return await run_in_threadpool(_register_import, reg, caller.owner_id, files, task, base_model, name,
                                   lambda base_row: resident(runtime, base_row, device).base)  # fmt: skip


def _register_import(reg, owner_id, files, task_ref, base_ref, name, load_base):  # type: ignore[no-untyped-def]
    with reg.tx() as s:
        task = catalog.get_task(s, owner_id, task_ref)
        base = catalog.get_base_model(s, base_ref)
    try:
        face, source = kinds.detect(files)
    except ArtifactError as e:
        raise Problem(422, "unknown-format", str(e), field="file") from None
    if not face.importable:
        raise Problem(422, "unsupported-import", f"importing {face.name} archives is not supported; import its members")
    art = face.import_files(files, base.path)
    if art.base is not None and art.base.fingerprint != base.identity:
        raise Problem(422, "wrong-base", f"this module was trained on base {art.base.name!r}, not {base.name!r}")
    if art.hidden_size != base.hidden_size:
        raise Problem(422, "wrong-base", f"module hidden size {art.hidden_size} != base {base.hidden_size}")
    if art.model_type and art.model_type != base.architecture:
        raise Problem(422, "wrong-base", f"the module is for a {art.model_type} model; the base is {base.architecture}")
    art.base = art.base or BaseIdentity(base.name, base.config_hash, base.weights_hash)
    try:
        kinds.check_fits(face, art, load_base(base))
    except ComposerError as e:
        raise Problem(
            422, "invalid-artifact", f"the module does not fit base {base.name!r}: {e}", field="file"
        ) from None
    labels = list(task_spec(task).labels)
    if art.labels and labels and labels != list(art.labels):
        raise Problem(422, "label-mismatch", f"module labels {art.labels} != task labels {task.labels}")
    head = getattr(art, "head", None)
    if head is not None and labels and head.kind == "classification" and head.num_labels != len(labels):
        raise Problem(
            422,
            "label-mismatch",
            f"the module's head has {head.num_labels} classes; task {task.name!r} has {len(labels)}",
        )
    w_sha, c_sha = artifact_store.store(reg, art)
    with reg.tx() as s:
        row = adapters.register_adapter(
            s,
            owner_id=owner_id,
            task_id=task.id,
            base_model_id=base.id,
            name=name or art.name,
            blob_sha256=w_sha,
            config_sha256=c_sha,
            **artifact_store.registration(art, source=source),
        )
        return adapter_json(row, format=source)


@router.post("/adapters/{ref}/archive")
def archive(ref: str, request: Request, caller: Trainer, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        row = adapters.resolve_adapter(s, caller.owner_id, ref)
        row = adapters.archive_adapter(s, row.id, caller.owner_id)
        out = adapter_json(row)
    request.app.state.runtime.evict(row.id)
    return out


class AliasIn(BaseModel):
    adapter: str


@router.put("/adapters/aliases/{task}/{alias}")
def set_alias(task: str, alias: str, body: AliasIn, caller: Trainer, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        t = catalog.get_task(s, caller.owner_id, task)
        row = adapters.resolve_adapter(s, caller.owner_id, body.adapter)
        al = adapters.set_alias(s, caller.owner_id, t.id, alias, row.id)
        history = [
            {"adapter_id": h.adapter_id, "assigned_at": h.assigned_at.isoformat()}
            for h in adapters.alias_history(s, al.id)
        ]
        return {"task": t.name, "alias": alias, "adapter_id": row.id, "history": history}


__all__ = ["router"]
