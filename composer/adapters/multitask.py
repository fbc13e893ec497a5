"""Recipe: multi-task adapters (MT-A), stage one of AdapterFusion, on a frozen base.

One adapter and one head per task, trained jointly: each step draws one task, with
probability ∝ size^α (α = 0.5 by default, so small tasks are not drowned), and a batch
from that task. Unlike the paper's MT-A variant, the base stays frozen: every member is
then an ordinary adapter of this base that can be fused, swapped or served alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from composer.adapters import artifacts
from composer.adapters.artifacts import AdapterArtifact
from composer.adapters.config import BottleneckConfig
from composer.adapters.model import AdaptedEncoder
from composer.adapters.training import head_for, predict_logits, score
from composer.base import LoadedBase
from composer.composition import Single
from composer.data import Collator, Example, TaskSpec, epoch_order
from composer.errors import ConfigError
from composer.training import Callback, Objective, TrainConfig, TrainResult, fit


@dataclass(frozen=True)
class TaggedExample(Example):
    task: int = 0


@dataclass
class TaskData:
    task: TaskSpec
    train: list[Example]
    validation: list[Example]


def sampling_weights(sizes: Sequence[int], alpha: float) -> torch.Tensor:
    w = torch.tensor([float(n) ** alpha for n in sizes])
    return w / w.sum()


def multitask_plan(sizes: Sequence[int], batch_size: int, alpha: float, seed: int):  # type: ignore[no-untyped-def]
    """plan(epoch) -> batches of indices into the concatenated training set, one task per batch."""
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    steps = sum((n + batch_size - 1) // batch_size for n in sizes)
    probs = sampling_weights(sizes, alpha)

    def plan(epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed * 7919 + epoch)
        draws = torch.multinomial(probs, steps, replacement=True, generator=gen).tolist()
        orders = [epoch_order(n, seed + t, epoch) for t, n in enumerate(sizes)]
        cursor = [0] * len(sizes)
        out = []
        for t in draws:
            batch = []
            for _ in range(min(batch_size, sizes[t])):
                batch.append(offsets[t] + orders[t][cursor[t] % sizes[t]])
                cursor[t] += 1
            out.append(batch)
        return out

    return plan


@dataclass
class MultitaskRun:
    model: AdaptedEncoder
    names: list[str]
    result: TrainResult
    max_length: int

    def artifacts(self, tasks: Sequence[TaskData]) -> list[AdapterArtifact]:
        out = []
        for name, td in zip(self.names, tasks, strict=True):
            art = artifacts.extract(self.model, name, head=name, kind="mt_a", max_length=self.max_length)
            art.labels = list(td.task.labels)
            art.metrics = {
                k.split("/", 1)[1]: v for k, v in self.result.best_metrics.items() if k.startswith(f"{name}/")
            }
            out.append(art)
        return out


def train_multitask(
    base: LoadedBase,
    tasks: Sequence[TaskData],
    adapter_cfg: BottleneckConfig,
    train_cfg: TrainConfig,
    alpha: float = 0.5,
    callbacks: Sequence[Callback] = (),
    resume: bytes | None = None,
) -> MultitaskRun:
    if len(tasks) < 2:
        raise ConfigError("a multi-task adapter set needs at least 2 tasks")
    names = [td.task.name for td in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    torch.manual_seed(train_cfg.seed)
    model = AdaptedEncoder(base)
    model.base_dropout = train_cfg.base_dropout
    collators = []
    for td in tasks:
        model.add_adapter(td.task.name, adapter_cfg)
        model.add_head(td.task.name, head_for(td.task))
        collators.append(Collator(base.tokenizer, td.task, train_cfg.max_length))
    train = [TaggedExample(e.text, e.label, e.text_pair, task=t) for t, td in enumerate(tasks) for e in td.train]

    def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        t = examples[0].task  # type: ignore[attr-defined]
        batch = collators[t](examples)
        batch["task"] = torch.tensor(t)
        return batch

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        name = names[int(batch.pop("task"))]
        labels = batch.pop("labels")
        return model.heads[name].loss(model(**batch, head=name, composition=Single(name)).logits, labels)

    def evaluate(_: Sequence[Example]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, td, col in zip(names, tasks, collators, strict=True):
            logits = predict_logits(model, name, td.validation, col, train_cfg.batch_size * 2, composition=Single(name))
            m = score(td.task, logits, td.validation)
            metrics.update({f"{name}/{k}": v for k, v in m.items()})
        metrics["mean"] = sum(metrics[f"{n}/{td.task.metric}"] for n, td in zip(names, tasks, strict=True)) / len(tasks)
        return metrics

    params = {f"adapters.{n}.{k}": p for n in names for k, p in model.adapters[n].named_parameters()}
    params.update({f"heads.{n}.{k}": p for n in names for k, p in model.heads[n].named_parameters()})
    objective = Objective(module=model, params=params, loss=loss, evaluate=evaluate, metric="mean")
    has_val = all(td.validation for td in tasks)
    plan = multitask_plan([len(td.train) for td in tasks], train_cfg.batch_size, alpha, train_cfg.seed)
    result = fit(
        objective, train, train if has_val else [], collate, train_cfg, callbacks,
        resume=resume, device=model.device, plan=plan,
    )  # fmt: skip
    return MultitaskRun(model=model, names=names, result=result, max_length=train_cfg.max_length)
