"""Registering an uploaded archive: one module (ours, AdapterHub or PEFT), or an AdapterHub fusion saved
with its members. Everything is read, checked against the base, attached to a throwaway model and made to
predict through its head on a probe input (`composer.probe`); what cannot serve the task is refused with a
422 before anything is stored. A fusion and its members are registered in one transaction, with lineage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from api.errors import Problem
from api.loaders import adapter_json
from composer import kinds
from composer.base import BaseIdentity, LoadedBase
from composer.errors import ArtifactError, ComposerError
from composer.fusion.artifacts import resolve_head
from composer.method import Artifact, MethodKind
from composer.probe import Expect, check_serves
from registry_db.models import BaseModelRow, Task
from registry_db.registry import Registry
from registry_db.repo import catalog
from service import artifact_store
from service.catalog import task_spec


def _read(files: dict[str, bytes], base: BaseModelRow, where: str = "") -> tuple[MethodKind, str, Artifact]:
    try:
        face, source = kinds.detect(files)
    except ArtifactError as e:
        raise Problem(422, "unknown-format", f"{where}{e}", field="file") from None
    try:
        art = kinds.import_as(face, files, base.path)
    except ComposerError as e:
        raise Problem(422, "invalid-artifact", f"{where}{e}", field="file") from None
    if art.base is not None and art.base.fingerprint != base.identity:
        raise Problem(422, "wrong-base", f"{where}this module was trained on base {art.base.name!r}, not {base.name!r}")
    if art.hidden_size != base.hidden_size:
        raise Problem(422, "wrong-base", f"{where}module hidden size {art.hidden_size} != base {base.hidden_size}")
    model_type = getattr(art, "model_type", None)
    if model_type and model_type != base.architecture:
        raise Problem(
            422, "wrong-base", f"{where}the module is for a {model_type} model; the base is {base.architecture}"
        )
    art.base = art.base or BaseIdentity(base.name, base.config_hash, base.weights_hash)
    return face, source, art


def _check_labels(art: Artifact, task: Task) -> None:
    labels = list(task_spec(task).labels)
    if art.labels and labels and labels != list(art.labels):
        raise Problem(422, "label-mismatch", f"module labels {art.labels} != task labels {task.labels}")
    head = getattr(art, "head", None)
    if head is not None and labels and head.kind == "classification" and head.num_labels != len(labels):
        detail = f"the module's head has {head.num_labels} classes; task {task.name!r} has {len(labels)}"
        raise Problem(422, "label-mismatch", detail)


def _serves(
    face: MethodKind,
    art: Artifact,
    base: LoadedBase,
    task: Task,
    members: Sequence[tuple[MethodKind, Artifact]] = (),
) -> None:
    """The module attaches to the base and predicts through its head what the task expects."""
    expect = Expect.of(task.kind, task.labels)
    try:
        check_serves(face, art, base, members, expect)
    except ComposerError as e:
        raise Problem(
            422,
            "cannot-serve",
            f"the module cannot serve task {task.name!r} on base {base.identity.name!r}: {e}",
            field="file",
        ) from None


def register_import(
    reg: Registry,
    owner_id: str,
    files: dict[str, bytes],
    task_ref: str,
    base_ref: str,
    name: str | None,
    load_base: Callable[[BaseModelRow], LoadedBase],
) -> dict[str, Any]:
    with reg.tx() as s:
        task = catalog.get_task(s, owner_id, task_ref)
        base = catalog.get_base_model(s, base_ref, owner_id)
    try:
        plan = kinds.plan_archive(files)
    except ArtifactError as e:
        raise Problem(422, "unknown-layout", str(e), field="file") from None
    if plan.single is not None:
        face, source, art = _read(plan.single, base)
        if not face.importable:
            detail = f"a {face.name} imports together with its members: one archive with a folder per member and one for the fusion"  # noqa: E501
            raise Problem(422, "unsupported-import", detail, field="file")
        _check_labels(art, task)
        _serves(face, art, load_base(base), task)
        shas = artifact_store.store(reg, art)
        with reg.tx() as s:
            row = _register(s, owner_id, task, base, name or art.name, art, source, shas)
            return adapter_json(row, format=source)
    return _register_fusion(reg, owner_id, plan, task, base, name, load_base(base))


def _register(s, owner_id, task, base, name, art, source, shas, fusion_members=None):  # type: ignore[no-untyped-def]
    """One imported module's registry row (its blobs already stored)."""
    return artifact_store.register_stored(
        s,
        art,
        shas,
        owner_id=owner_id,
        task_id=task.id,
        base_model_id=base.id,
        name=name,
        fusion_members=fusion_members,
        source=source,
    )


def _register_fusion(reg, owner_id, plan, task, base, name, loaded) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    members = []
    for folder, fs in plan.members.items():
        face, source, art = _read(fs, base, where=f"member {folder}/: ")
        if not face.fusable:
            raise Problem(
                422, "unsupported-import", f"member {folder}/ is a {face.name}, which cannot be fused", field="file"
            )
        members.append((folder, face, source, art))
    fusion_face = kinds.get("fusion")
    fusion, fusion_source, fusion_art = _read(plan.fusion, base, where="fusion: ")
    if fusion is not fusion_face:
        raise Problem(422, "unknown-format", "the fusion folder is not an AdapterHub fusion", field="file")
    try:
        head_from = resolve_head(fusion_art, [(folder, art) for folder, _, _, art in members])
    except ArtifactError as e:
        raise Problem(422, "no-head", str(e), field="file") from None
    _check_labels(fusion_art, task)
    _serves(fusion_face, fusion_art, loaded, task, [(face, art) for _, face, _, art in members])
    stored = [artifact_store.store(reg, art) for _, _, _, art in members]
    with reg.tx() as s:
        rows = [
            _register(s, owner_id, task, base, art.name or folder.rpartition("/")[2], art, source, shas)
            for (folder, _face, source, art), shas in zip(members, stored, strict=True)
        ]
        fusion_art.members = [r.id for r in rows]  # ours names members by registry id
        shas = artifact_store.store(reg, fusion_art)
        row = _register(
            s, owner_id, task, base, name or fusion_art.name, fusion_art, fusion_source, shas, fusion_art.members
        )
        member_json = [adapter_json(r, format=src) for r, (_, _, src, _) in zip(rows, members, strict=True)]
        return adapter_json(
            row,
            format=fusion_source,
            members=fusion_art.members,
            imported_members=member_json,
            head_from=head_from,
        )
