"""Recipe: train one single-task adapter (ST-A) and its head on a frozen base."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact, AdapterConfig
from composer.base import LoadedBase
from composer.composition import Composition, Single
from composer.data import Collator, Example, TaskSpec
from composer.encoder import AdaptedEncoder
from composer.heads import HeadConfig, head_for
from composer.metrics import score
from composer.training import Callback, Objective, TrainConfig, TrainResult, fit


def predict_logits(
    model: AdaptedEncoder,
    head: str,
    examples: Sequence[Example],
    collate: Collator,
    batch_size: int = 64,
    *,
    composition: Composition | None,
) -> torch.Tensor:
    """Logits for `examples` under `composition`, in order."""
    out = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(model.device) for k, v in collate(examples[i : i + batch_size]).items() if k != "labels"}
            out.append(model(**batch, head=head, composition=composition).logits.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class STAdapterRun:
    model: AdaptedEncoder
    name: str
    result: TrainResult
    max_length: int
    hooks: Any = None  # the method's training hooks, which may say how it is saved (an AdaLoRA: pruned)

    def artifact(self, task: TaskSpec) -> AdapterArtifact:
        saved = self.hooks.saved() if self.hooks is not None and hasattr(self.hooks, "saved") else None
        return artifacts.extract(
            self.model,
            self.name,
            head=self.name,
            saved=saved,
            labels=list(task.labels),
            metrics=dict(self.result.best_metrics),
            max_length=self.max_length,
        )


def train_st_adapter(
    base: LoadedBase,
    task: TaskSpec,
    train: Sequence[Example],
    validation: Sequence[Example],
    adapter_cfg: AdapterConfig,  # a bottleneck adapter's or a LoRA's
    train_cfg: TrainConfig,
    head_cfg: HeadConfig | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bytes | None = None,
    name: str | None = None,
    init_adapter: dict[str, torch.Tensor] | None = None,
) -> STAdapterRun:
    """With `init_adapter` (a source adapter's weights for `adapter_cfg`), the adapter starts from them,
    intermediate-task transfer; the head is always fresh."""
    name = name or task.name
    torch.manual_seed(train_cfg.seed)  # adapter/head init is part of the seeded run
    model = AdaptedEncoder(base)
    model.base_dropout = train_cfg.base_dropout
    start = {k: v.detach().clone() for k, v in init_adapter.items()} if init_adapter is not None else None
    model.add_adapter(name, adapter_cfg, weights=start)
    model.add_head(name, head_cfg or head_for(task))
    single = Single(name)
    collate = Collator(base.tokenizer, task, train_cfg.max_length)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        return model.heads[name].loss(model(**batch, head=name, composition=single).logits, labels)

    def evaluate(examples: Sequence[Example]) -> dict[str, float]:
        return score(
            task, predict_logits(model, name, examples, collate, train_cfg.batch_size * 2, composition=single), examples
        )

    params = {f"adapters.{name}.{k}": p for k, p in model.adapters[name].named_parameters()}
    params.update({f"heads.{name}.{k}": p for k, p in model.heads[name].named_parameters()})
    make_hooks = getattr(model.adapters[name], "training_hooks", None)
    hooks = make_hooks() if make_hooks is not None else None
    objective = Objective(module=model, params=params, loss=loss, evaluate=evaluate, metric=task.metric, hooks=hooks)
    result = fit(objective, train, validation, collate, train_cfg, callbacks, resume=resume, device=model.device)
    return STAdapterRun(model=model, name=name, result=result, max_length=train_cfg.max_length, hooks=hooks)
