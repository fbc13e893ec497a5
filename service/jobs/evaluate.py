"""`evaluate` jobs: score a registered module of any kind on a dataset, through the serving path, and store the
metrics on it."""

from __future__ import annotations

from typing import Any

import torch
from sqlalchemy.orm import Session

from composer import kinds
from composer.errors import ComposerError
from composer.metrics import score
from composer.serving import Runtime
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from registry_db.repo import adapters as adapter_repo
from service import artifact_store
from service.catalog import load_dataset_examples, task_spec
from service.jobs.base import JobType, Spec, dataset_of_task
from service.jobs.context import Finish, JobContext


class EvaluateJobSpec(Spec):
    """Score an adapter on a dataset split and store the metrics."""

    adapter: str
    dataset: str


def check(s: Session, owner_id: str, spec: EvaluateJobSpec) -> dict[str, Any]:
    adapter = adapter_repo.resolve_adapter(s, owner_id, spec.adapter)
    dataset_of_task(s, owner_id, spec.dataset, adapter.task_id, "evaluation")
    return spec.model_copy(update={"adapter": adapter.id}).model_dump()


def handle(ctx: JobContext, spec: EvaluateJobSpec) -> Finish:
    """Scores any kind through the serving path (its face attaches it, after a fusion's members; rows are
    predicted in batches of 64, each truncated where the module was trained)."""
    with ctx.registry.tx() as s:
        row = adapters.get_adapter(s, spec.adapter, ctx.job.owner_id)
        task = catalog.get_task(s, row.owner_id, row.task_id)
        ds = catalog.get_dataset(s, spec.dataset)
        base_row = catalog.get_base_model(s, row.base_model_id)
        members = adapters.fusion_members(s, row.id)
    base = ctx.load_base(base_row)
    runtime = Runtime()
    res = runtime.resident(base_row.id, lambda: base)
    fetch = artifact_store.fetch
    specs = [(m.id, kinds.get(m.kind), lambda m=m: fetch(ctx.registry, m)) for m in members]
    runtime.ensure(res, base_row.id, row.id, kinds.get(row.kind), lambda: fetch(ctx.registry, row), specs)
    if not runtime.serves(row.id):
        raise ComposerError(f"adapter {row.id} has no head to predict through: it serves as a member of a fusion")
    examples = load_dataset_examples(ctx.registry, ds, task)
    logits = []
    for i in range(0, len(examples), 64):
        logits += [o.logits for o in runtime.predict(res, [(row.id, e) for e in examples[i : i + 64]])]
    tspec = task_spec(task)
    metrics = score(tspec, torch.stack(logits), examples)
    ctx.event("metric", {"split": ds.split, "dataset": ds.id, **metrics})

    def register(s: Session, job: Job) -> dict:
        target = adapters.get_adapter(s, row.id)
        target.metrics = {**target.metrics, f"eval/{ds.split}/{ds.id}": metrics}
        return {}

    return Finish(result={"adapter_id": row.id, "dataset_id": ds.id, "metrics": metrics}, register=register)


JOB = JobType("evaluate", EvaluateJobSpec, check, handle, queue="default")
