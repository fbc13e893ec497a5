"""`evaluate` jobs: score a registered adapter on a dataset and store the metrics on the adapter."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from composer import adapter_artifact as artifacts
from composer.adapter_training import predict_logits, score
from composer.composition import Single
from composer.data import Collator
from composer.encoder import AdaptedEncoder
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
    with ctx.registry.tx() as s:
        row = adapters.get_adapter(s, spec.adapter, ctx.job.owner_id)
        task = catalog.get_task(s, row.owner_id, row.task_id)
        ds = catalog.get_dataset(s, spec.dataset)
        base_row = catalog.get_base_model(s, row.base_model_id)
    art = artifact_store.fetch(ctx.registry, row)
    model = AdaptedEncoder(ctx.load_base(base_row))
    name = artifacts.attach(model, art)
    examples = load_dataset_examples(ctx.registry, ds, task)
    tspec = task_spec(task)
    metrics = score(
        tspec,
        predict_logits(model, name, examples, Collator(model.base.tokenizer, tspec), composition=Single(name)),
        examples,
    )
    ctx.event("metric", {"split": ds.split, "dataset": ds.id, **metrics})

    def register(s: Session, job: Job) -> dict:
        target = adapters.get_adapter(s, row.id)
        target.metrics = {**target.metrics, f"eval/{ds.split}/{ds.id}": metrics}
        return {}

    return Finish(result={"adapter_id": row.id, "dataset_id": ds.id, "metrics": metrics}, register=register)


JOB = JobType("evaluate", EvaluateJobSpec, check, handle, queue="default")
