"""`prompts` jobs: train K soft prompts for a task; register each as a soft_prompt and the set as an ensemble."""

from __future__ import annotations

from sqlalchemy.orm import Session

from composer.prompts.prompt import PromptConfig
from composer.prompts.training import train_prompts
from registry_db.models import Job
from registry_db.repo import adapters
from workers import artifact_store
from workers.handlers.adapter import job_inputs, with_checkpoint_default
from workers.runner import Finish, JobContext
from workers.specs import PromptsJobSpec


def handle(ctx: JobContext) -> Finish:
    spec = PromptsJobSpec.model_validate(ctx.job.spec)
    cfg = with_checkpoint_default(spec.train_config(), ctx)
    inp = job_inputs(ctx, spec.task, spec.base_model, spec.train_dataset, spec.validation_dataset)
    task, tspec, base_row, base = inp.task, inp.spec, inp.base_row, inp.base
    train, validation = inp.train, inp.validation
    run = train_prompts(
        base,
        tspec,
        train,
        validation,
        spec.k,
        PromptConfig.from_dict(spec.prompt),
        cfg,
        callbacks=[ctx.callback()],
        resume=ctx.resume,
    )
    arts = run.artifacts(tspec)
    stored = [artifact_store.store(ctx.registry, art) for art in arts]
    name = spec.name or f"{task.name}-prompts"

    def register(s: Session, job: Job) -> dict:
        ids = []
        for art, (w_sha, c_sha) in zip(arts, stored, strict=True):
            row = adapters.register_adapter(
                s,
                owner_id=job.owner_id,
                task_id=task.id,
                base_model_id=base_row.id,
                name=f"{name}/{art.name}",
                blob_sha256=w_sha,
                config_sha256=c_sha,
                job_id=job.id,
                **artifact_store.registration(art),
            )
            ids.append(row.id)
        ens = adapters.create_set(
            s,
            owner_id=job.owner_id,
            kind="ensemble",
            name=f"{name}#{job.id}",
            adapter_ids=ids,
            task_id=task.id,
            voting=spec.voting,
            job_id=job.id,
        )
        return {"adapter_ids": ids, "ensemble_id": ens.id}

    scores = {n: run.result.best_metrics.get(f"{n}/{tspec.metric}") for n in run.names}
    return Finish(
        result={"metrics": run.result.best_metrics, "scores": scores, "steps": run.result.steps}, register=register
    )
