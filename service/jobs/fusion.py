"""`fusion` jobs: an AdapterFusion over registered adapters for a target task, optionally pruned. The recipe
(warm start, learning-rate grid, member comparison, pruning) is `composer.fusion.recipe.fuse`;
this job loads its inputs, calls it, and registers the fusion (and the pruned one) with its members."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from sqlalchemy.orm import Session

from composer import kinds
from composer.fusion.modules import FusionConfig
from composer.fusion.recipe import LR_GRID, FusionRequest, fuse
from composer.heads import HeadConfig
from composer.training import TrainConfig
from composer.transfer.estimators import Estimator
from registry_db.errors import InvalidInput
from registry_db.models import Job
from registry_db.repo import adapters as adapter_repo
from registry_db.repo import catalog
from service import artifact_store
from service.jobs.base import JobType, Spec, configs_valid, dataset_of_task
from service.jobs.context import Finish, JobContext, job_inputs, with_checkpoint_default

FUSION_DEFAULTS = {"learning_rate": 5e-5, "epochs": 10, "patience": 3}


class AutoMembers(Spec):
    """The members chosen by the service: the top `auto` fusable sources of the task's ranking, plus the
    task's own adapter where one exists."""

    auto: int = Field(ge=1, le=15)
    estimator: Estimator = "logme"


class FusionJobSpec(Spec):
    """Train an AdapterFusion over 2 to 16 ready adapters of one base, for a target task."""

    task: str
    # the fusion's members, by this one name from the request to the registry's fusion_members rows
    # (`adapters`, the field's earlier name, is still read)
    members: AutoMembers | list[str] = Field(validation_alias=AliasChoices("members", "adapters"))
    train_dataset: str
    validation_dataset: str | None = None
    fusion: dict[str, Any] = Field(default_factory=dict)  # FusionConfig fields
    pooling: Literal["cls", "mean"] = "mean"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    prune_threshold: float | None = Field(None, gt=0, lt=1)
    name: str | None = None
    base_model: str | None = None  # filled in at submit from the adapters
    # start from the target task's own adapter when it is a member (its head, attention on it)
    warm_start: bool = True
    # fail, instead of registering a copy of the start, when no epoch beats it on validation
    require_improvement: bool = False

    @field_validator("members")
    @classmethod
    def _count(cls, v: AutoMembers | list[str]) -> AutoMembers | list[str]:
        if isinstance(v, list) and not 2 <= len(v) <= 16:
            raise ValueError(f"a fusion lists at least 2 and at most 16 members, got {len(v)}")
        return v

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict({**FUSION_DEFAULTS, **self.hyperparameters})


def check(s: Session, owner_id: str, spec: FusionJobSpec) -> dict[str, Any]:
    from composer.fusion.modules import PLACEMENT_FIELDS, FusionConfig

    configs_valid(spec.train_config, lambda: FusionConfig.from_dict(spec.fusion))
    task = catalog.get_task(s, owner_id, spec.task)
    dataset_of_task(s, owner_id, spec.train_dataset, task.id, "train")
    if spec.validation_dataset:
        dataset_of_task(s, owner_id, spec.validation_dataset, task.id, "validation")
    if isinstance(spec.members, AutoMembers):  # chosen when the job runs, from the ranking of that moment
        base = catalog.get_base_model(s, spec.base_model, owner_id).id if spec.base_model else None
        return spec.model_copy(update={"task": task.id, "base_model": base}).model_dump()
    rows = [adapter_repo.resolve_adapter(s, owner_id, ref) for ref in spec.members]
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise InvalidInput("the same adapter is listed twice")
    for r in rows:
        if not kinds.get(r.kind).fusable:
            fusable = sorted(k for k, face in kinds.KINDS.items() if face.fusable)
            raise InvalidInput(f"adapter {r.id} is a {r.kind}; only {', '.join(fusable)} adapters can be fused")
        if r.status != "ready":
            raise InvalidInput(f"adapter {r.id} is {r.status}, not ready")
    if len({r.base_model_id for r in rows}) != 1:
        raise InvalidInput("the adapters were trained on different base models and cannot be fused")
    layouts = {tuple(str(r.method_config.get("config", {}).get(f)) for f in PLACEMENT_FIELDS) for r in rows}
    if len(layouts) != 1:
        raise InvalidInput("the adapters have different placements and cannot be fused")
    return spec.model_copy(update={"task": task.id, "members": ids}).model_dump() | {
        "base_model": rows[0].base_model_id
    }


def auto_members(ctx: JobContext, spec: FusionJobSpec) -> tuple[FusionJobSpec, dict[str, Any]]:
    """`members: {auto: k}` made explicit: the top k fusable sources of the ranking on the task's train
    dataset, after the task's own newest ready adapter on that base (which the fusion then starts from)."""
    from service.transfer import rank

    auto = spec.members
    assert isinstance(auto, AutoMembers)
    ranking = rank(
        ctx.registry,
        ctx.settings,
        ctx.load_base,
        ctx.job.owner_id,
        spec.task,
        auto.estimator,
        base_model=spec.base_model,
        dataset=spec.train_dataset,
    )
    picks = [i for i in ranking.items if kinds.get(i["kind"]).fusable][: auto.auto]
    with ctx.registry.tx() as s:
        page = adapter_repo.list_adapters(s, ctx.job.owner_id, task_id=spec.task, status="ready", limit=200)
        own = [a for a in page.items if kinds.get(a.kind).fusable and a.base_model_id == ranking.base_model_id]
        own.sort(key=lambda a: a.created_at, reverse=True)
        ids = [a.id for a in own[:1]] + [i["adapter_id"] for i in picks]
        if len(ids) < 2:
            raise InvalidInput(f"the ranking gave {len(ids)} fusable member(s); a fusion needs at least 2")
        explicit = spec.model_copy(update={"members": ids, "base_model": None})
        normalised = FusionJobSpec.model_validate(check(s, ctx.job.owner_id, explicit))
    chosen = {"estimator": auto.estimator, "k": auto.auto, "own": ids[0] if own else None, "ranked": picks}
    return normalised, chosen


def handle(ctx: JobContext, spec: FusionJobSpec) -> Finish:
    chosen = None
    if isinstance(spec.members, AutoMembers):
        spec, chosen = auto_members(ctx, spec)
        ctx.event("members_chosen", chosen)
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    inp = job_inputs(ctx, spec.task, spec.base_model or "", spec.train_dataset, spec.validation_dataset)
    task, tspec = inp.task, inp.spec
    with ctx.registry.tx() as s:
        members = [adapter_repo.get_adapter(s, a, ctx.job.owner_id) for a in spec.members]
    arts = [artifact_store.fetch(ctx.registry, m) for m in members]
    own = [i for i, (m, a) in enumerate(zip(members, arts, strict=True)) if m.task_id == task.id and a.head is not None]
    req = FusionRequest(
        member_ids=[m.id for m in members],
        members=arts,
        own=own,
        own_scores=[members[i].metrics.get(tspec.metric, float("-inf")) for i in own],
        fusion=FusionConfig.from_dict(spec.fusion),
        train=cfg,
        head=HeadConfig(kind=tspec.kind, num_labels=tspec.num_labels, pooling=spec.pooling),
        warm_start=spec.warm_start,
        learning_rate_given="learning_rate" in spec.hyperparameters,
        require_improvement=spec.require_improvement,
        prune_threshold=spec.prune_threshold,
    )
    out = fuse(inp.base, tspec, inp.train, inp.validation, req, ctx.callback(), ctx.resume, ctx.event)
    shas = artifact_store.store(ctx.registry, out.artifact)
    name = spec.name or f"{task.name}-fusion"

    def register(s: Session, job: Job) -> dict:
        where = {"owner_id": job.owner_id, "task_id": task.id, "base_model_id": inp.base_row.id, "job_id": job.id}
        row = artifact_store.register_stored(s, out.artifact, shas, name=name, fusion_members=req.member_ids, **where)
        done = {"adapter_id": row.id, "version": row.version}
        if out.pruned_members:
            derived = artifact_store.register_stored(
                s,
                out.artifact,
                shas,
                name=f"{name}-pruned",
                fusion_members=out.pruned_members,
                metrics=out.pruned_metrics,
                derived_from=row.id,
                **where,
            )
            done["pruned_adapter_id"] = derived.id
        return done

    return Finish(result=out.report | ({"members_chosen": chosen} if chosen else {}), register=register)


JOB = JobType(
    "fusion",
    FusionJobSpec,
    check,
    handle,
    hyperparameter_defaults=FUSION_DEFAULTS,
    options={"learning_rate_grid": list(LR_GRID)},
)
