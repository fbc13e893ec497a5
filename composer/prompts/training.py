"""Recipe: train K soft prompts for one task as one batched model (shared data loading and forward).

Each prompt has its own seed-dependent initialisation (cycling through the init modes given)
and its own head. Every batch runs B×K rows; the loss is the sum of the K prompts' losses,
so each prompt's gradients are its own. Early stopping follows the mean validation score;
each prompt's own validation score is reported for weighted voting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from composer.base import LoadedBase
from composer.data import Collator, Example, TaskSpec
from composer.errors import ConfigError
from composer.heads import HeadConfig
from composer.metrics import score
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.model import PromptModel
from composer.prompts.prompt import PromptConfig
from composer.training import Callback, Objective, TrainConfig, TrainResult, fit


@dataclass
class PromptsRun:
    model: PromptModel
    names: list[str]
    result: TrainResult
    max_length: int

    def artifacts(self, task: TaskSpec) -> list[PromptArtifact]:
        out = []
        for n in self.names:
            metrics = {k.split("/", 1)[1]: v for k, v in self.result.best_metrics.items() if k.startswith(f"{n}/")}
            cfg, prompt = self.model.prompts[n].collapsed()  # an encoder or MLP folds into plain tensors on save
            out.append(
                PromptArtifact(
                    name=n,
                    config=cfg,
                    hidden_size=self.model.base.hidden_size,
                    prompt=prompt,
                    head=self.model.heads[n].cfg,
                    head_tensors={k: v.detach().cpu().clone() for k, v in self.model.heads[n].state_dict().items()},
                    labels=list(task.labels),
                    base=self.model.base.identity,
                    metrics=metrics,
                    max_length=self.max_length,
                )
            )
        return out


def batched_logits(
    model: PromptModel, names: list[str], examples: Sequence[Example], collate: Collator, batch_size: int
) -> torch.Tensor:
    chunks = []
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {
                k: v.to(model.base.device) for k, v in collate(examples[i : i + batch_size]).items() if k != "labels"
            }
            chunks.append(model.logits(names, batch).float().cpu())
    return torch.cat(chunks)


def train_prompts(
    base: LoadedBase,
    task: TaskSpec,
    train: Sequence[Example],
    validation: Sequence[Example],
    k: int,
    prompt_cfg: PromptConfig,
    train_cfg: TrainConfig,
    head_cfg: HeadConfig | None = None,
    inits: Sequence[str] = ("vocab", "labels"),
    callbacks: Sequence[Callback] = (),
    resume: bytes | None = None,
) -> PromptsRun:
    if k < 1:
        raise ConfigError("train at least one prompt (k >= 1)")
    torch.manual_seed(train_cfg.seed)
    model = PromptModel(base)
    head_cfg = head_cfg or HeadConfig(kind=task.kind, num_labels=task.num_labels, pooling="mean", layers=1, dropout=0.1)
    names = [f"p{i}" for i in range(k)]
    for i, n in enumerate(names):
        init = inits[i % len(inits)] if prompt_cfg.init != "text" else "text"
        if init == "labels" and task.kind != "classification":
            init = "vocab"
        cfg = dataclasses.replace(prompt_cfg, init=init)  # type: ignore[arg-type]
        model.add(n, cfg, head_cfg)
        model.prompts[n].initialise(base, task.labels, seed=train_cfg.seed * 1000 + i)
    max_length = min(train_cfg.max_length, base.token_limit - prompt_cfg.positions_taken)
    if max_length < 2:
        raise ConfigError(
            f"prompt.length: {prompt_cfg.length} prompt positions leave no room for an input on this base "
            f"({base.token_limit} positions)"
        )
    collate = Collator(base.tokenizer, task, max_length)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        logits = model.logits(names, batch)  # [B, K, C]
        return sum(model.heads[n].loss(logits[:, i], labels) for i, n in enumerate(names))  # type: ignore[return-value]

    def evaluate(examples: Sequence[Example]) -> dict[str, float]:
        logits = batched_logits(model, names, examples, collate, train_cfg.batch_size * 2)
        metrics: dict[str, float] = {}
        for i, n in enumerate(names):
            metrics.update({f"{n}/{key}": v for key, v in score(task, logits[:, i], examples).items()})
        metrics["mean"] = sum(metrics[f"{n}/{task.metric}"] for n in names) / k
        return metrics

    params = {f"prompts.{n}.{key}": p for n in names for key, p in model.prompts[n].named_parameters()}
    params.update({f"heads.{n}.{key}": p for n in names for key, p in model.heads[n].named_parameters()})
    objective = Objective(module=model, params=params, loss=loss, evaluate=evaluate, metric="mean")
    result = fit(objective, train, validation, collate, train_cfg, callbacks, resume=resume, device=base.device)
    return PromptsRun(model=model, names=names, result=result, max_length=max_length)
