"""`evaluate` jobs: score a registered adapter on a dataset and store the metrics on the adapter."""

from __future__ import annotations

from sqlalchemy.orm import Session

from composer.adapters import artifacts
from composer.adapters.model import AdaptedEncoder
from composer.adapters.training import predict_logits, score
from composer.composition import Single
from composer.data import Collator
from registry_db.models import Job
from registry_db.repo import adapters, catalog
from workers import artifact_store
from workers.catalog import load_dataset_examples, task_spec
from workers.runner import Finish, JobContext
from workers.specs import EvaluateJobSpec


def handle(ctx: JobContext) -> Finish:
    spec = EvaluateJobSpec.model_validate(ctx.job.spec)
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
