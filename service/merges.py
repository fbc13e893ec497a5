"""Merging registered adapters into one new module (`POST /v1/merges`): the members' kind merges them
(its face's `merge`), the result takes one member's head, must serve (the import probe), and is
registered with its lineage (members, weights, method, density, seed) in its method config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from composer import kinds
from composer.base import LoadedBase
from composer.errors import ConfigError
from composer.probe import Expect, check_serves
from composer.transfer.estimators import Estimator
from registry_db.errors import InvalidInput
from registry_db.models import Adapter, BaseModelRow
from registry_db.registry import Registry
from registry_db.repo import adapters, catalog
from service import artifact_store


class AutoMerge(BaseModel):
    """The members chosen by the service: the top `auto` sources of `task`'s ranking that merge with the
    top one (its kind); the merge is a module of the top source's task (its head), for a warm start."""

    model_config = ConfigDict(extra="forbid")

    auto: int = Field(ge=2, le=16)
    task: str
    estimator: Estimator = "logme"


class MergeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: AutoMerge | list[str]
    weights: list[float] | None = None  # default: equal; they are used as given (task arithmetic)
    method: Literal["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune", "cat", "svd"] = "linear"
    density: float = Field(1.0, gt=0, le=1)  # TIES, DARE and magnitude pruning keep this share of each tensor
    seed: int = 0  # DARE's random drops
    head: str | None = None  # the member whose head serves the merge (default: the first)
    name: str | None = None
    force: bool = False  # merge members that did not start from one recorded initialisation anyway

    @field_validator("members")
    @classmethod
    def _count(cls, v: AutoMerge | list[str]) -> AutoMerge | list[str]:
        if isinstance(v, list) and not 2 <= len(v) <= 16:
            raise ValueError(f"a merge lists at least 2 and at most 16 members, got {len(v)}")
        return v


def _start(row: Adapter) -> Any:
    return (row.method_config or {}).get("init_seed")


def auto_members(
    reg: Registry, owner_id: str, spec: MergeSpec, load_base: Callable[[BaseModelRow], LoadedBase], settings: Any
) -> tuple[MergeSpec, dict[str, Any]]:
    from service.transfer import rank

    auto = spec.members
    assert isinstance(auto, AutoMerge)
    ranking = rank(reg, settings, load_base, owner_id, auto.task, auto.estimator)
    kind = ranking.items[0]["kind"]
    with reg.tx() as s:
        configs = {
            i["adapter_id"]: (adapters.get_adapter(s, i["adapter_id"]).method_config or {}).get("config")
            for i in ranking.items
        }
    top = configs[ranking.items[0]["adapter_id"]]
    picks = [i for i in ranking.items if i["kind"] == kind and configs[i["adapter_id"]] == top][: auto.auto]
    if len(picks) < 2:
        raise InvalidInput(f"the ranking of {auto.task!r} has {len(picks)} {kind} source(s) to merge; a merge needs 2")
    chosen = {"task": auto.task, "estimator": auto.estimator, "k": auto.auto, "ranked": picks}
    return spec.model_copy(update={"members": [i["adapter_id"] for i in picks]}), chosen


def merge(
    reg: Registry,
    owner_id: str,
    spec: MergeSpec,
    load_base: Callable[[BaseModelRow], LoadedBase],
    settings: Any = None,  # service settings (where ranking features are cached); default: the environment's
) -> tuple[Adapter, list[Adapter]]:
    chosen = None
    if isinstance(spec.members, AutoMerge):
        from service.settings import get_settings

        spec, chosen = auto_members(reg, owner_id, spec, load_base, settings or get_settings())
    assert isinstance(spec.members, list)
    weights = spec.weights if spec.weights is not None else [1.0 / len(spec.members)] * len(spec.members)
    if len(weights) != len(spec.members):
        raise InvalidInput(f"{len(weights)} weights for {len(spec.members)} members")
    if abs(sum(weights)) < 1e-12 and spec.method not in ("cat", "svd"):
        raise InvalidInput("the weights sum to 0")
    with reg.tx() as s:
        rows = [adapters.resolve_adapter(s, owner_id, ref) for ref in spec.members]
        head = adapters.resolve_adapter(s, owner_id, spec.head) if spec.head else rows[0]
        if len({r.id for r in rows}) != len(rows):
            raise InvalidInput("the same adapter is listed twice")
        if head.id not in {r.id for r in rows}:
            raise InvalidInput(f"the head {spec.head!r} is not one of the members")
        if len({r.kind for r in rows}) != 1:
            raise InvalidInput(f"members of one kind merge; got {sorted({r.kind for r in rows})}")
        face = kinds.get(rows[0].kind)
        if spec.method not in face.merge_methods:
            raise InvalidInput(
                f"{face.name} modules merge by {list(face.merge_methods) or 'no method'}, not {spec.method!r}"
            )
        if len({r.base_model_id for r in rows}) != 1:
            raise InvalidInput("the members were trained on different base models")
        if any(r.status != "ready" for r in rows):
            raise InvalidInput("every member must be ready")
        starts = {str(_start(r)) for r in rows}
        if not spec.force and (len(starts) != 1 or None in {_start(r) for r in rows}):
            raise InvalidInput(
                "a merge means something only for members that started from one initialisation; these record "
                f'{sorted(starts)} (an imported module records none). Merge them anyway with "force": true'
            )
        task = catalog.get_task(s, owner_id, head.task_id)
        base_row = catalog.get_base_model(s, head.base_model_id)
    arts = [artifact_store.fetch(reg, r) for r in rows]
    base = load_base(base_row)
    try:
        art = face.merge(arts, weights, spec.method, spec.density, spec.seed, base.family)
    except ConfigError as e:
        raise InvalidInput(str(e)) from None
    donor = arts[[r.id for r in rows].index(head.id)]
    art.head, art.labels = donor.head, donor.labels
    art.tensors.update({k: v for k, v in donor.tensors.items() if k.startswith("head.")})
    art.name = spec.name or f"{task.name}-{spec.method}-merge"
    expect = Expect.of(task.kind, task.labels)
    try:
        check_serves(face, art, base, (), expect)
    except ConfigError as e:
        raise InvalidInput(f"the merged module cannot serve: {e}") from None
    lineage = {
        "members": [r.id for r in rows],
        "weights": weights,
        "method": spec.method,
        "density": spec.density,
        "seed": spec.seed,
        "head_from": head.id,
        **({"chosen": chosen} if chosen else {}),
    }
    shas = artifact_store.store(reg, art)
    with reg.tx() as s:
        row = artifact_store.register_stored(
            s, art, shas, owner_id=owner_id, task_id=task.id, base_model_id=base_row.id, name=art.name, merge=lineage
        )
    return row, rows
