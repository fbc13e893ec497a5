"""Recipe: multi-task adapters (MT-A) as AdapterFusion defines them (Pfeiffer et al., 2021, §2.2).

N task adapters and their heads are trained in parallel on a multi-task objective, and the
pretrained weights Θ are fine-tuned along with them (at their own, lower learning rate). Each
step draws one task, with probability ∝ size^α (α = 0.5 by default; α = 1/T for a sampling
temperature T), and a batch from that task.

The result is a *derived base* (the fine-tuned Θ, with its own identity) and N adapters bound
to it. Every task is validated at every evaluation; the base is kept from the evaluation with
the best mean score (the N adapters must share one base to be fused), and then each task's own
adapter and head are picked from the evaluation where they score best *on that base*, so each
task gets its best checkpoint and every pick is validated on the base it will be served with.

The earlier frozen-base variant shared nothing between the tasks (its joint loss split into N
independent terms: N ST-As trained in interleaved steps) and is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact
from composer.adapter_training import head_for, predict_logits, score
from composer.base import BaseIdentity, LoadedBase, base_weights, derive
from composer.bottleneck.modules import BottleneckConfig
from composer.composition import Single
from composer.data import Collator, Example, TaskSpec, epoch_order
from composer.encoder import AdaptedEncoder
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
    selection: dict[str, dict[str, float]]  # per task: the picked evaluation's step, epoch and metrics

    def artifacts(self, tasks: Sequence[TaskData]) -> list[AdapterArtifact]:
        """The N adapters, bound to the derived base (`derive_base` first)."""
        out = []
        for name, td in zip(self.names, tasks, strict=True):
            art = artifacts.extract(self.model, name, head=name, kind="mt_a", max_length=self.max_length)
            art.labels = list(td.task.labels)
            art.metrics = {k: v for k, v in self.selection[name].items() if k not in ("step", "epoch")}
            out.append(art)
        return out

    def derive_base(self, name: str) -> BaseIdentity:
        """Name the fine-tuned encoder and hash it: the identity the N adapters are bound to."""
        return derive(self.model.base, name)

    def base_weights(self) -> dict[str, torch.Tensor]:
        return base_weights(self.model.base)


def train_multitask(
    base: LoadedBase,
    tasks: Sequence[TaskData],
    adapter_cfg: BottleneckConfig,
    train_cfg: TrainConfig,
    alpha: float = 0.5,
    base_learning_rate: float = 2e-5,
    callbacks: Sequence[Callback] = (),
    resume: bytes | None = None,
) -> MultitaskRun:
    """Fine-tune `base` (in place) jointly with one adapter and head per task."""
    if len(tasks) < 2:
        raise ConfigError("a multi-task adapter set needs at least 2 tasks")
    names = [td.task.name for td in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    if not base_learning_rate > 0:
        raise ConfigError(f"base_learning_rate must be > 0, got {base_learning_rate}")
    torch.manual_seed(train_cfg.seed)
    model = AdaptedEncoder(base)
    model.base_dropout = True  # the base is fine-tuned: it trains with its dropout, as in full fine-tuning
    collators = []
    for td in tasks:
        model.add_adapter(td.task.name, adapter_cfg)
        model.add_head(td.task.name, head_for(td.task))
        collators.append(Collator(base.tokenizer, td.task, train_cfg.max_length))
    train = [TaggedExample(e.text, e.label, e.text_pair, task=t) for t, td in enumerate(tasks) for e in td.train]
    own = {n: {f"adapters.{n}.{k}": p for k, p in model.adapters[n].named_parameters()} for n in names}
    for n in names:
        own[n].update({f"heads.{n}.{k}": p for k, p in model.heads[n].named_parameters()})
    snapshots: list[tuple[dict[str, float], dict[str, dict[str, torch.Tensor]]]] = []

    def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        t = examples[0].task  # type: ignore[attr-defined]
        batch = collators[t](examples)
        batch["task"] = torch.tensor(t)
        return batch

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        name = names[int(batch.pop("task"))]
        labels = batch.pop("labels")
        return model.heads[name].loss(model(**batch, head=name, composition=Single(name)).logits, labels)

    def validate() -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, td, col in zip(names, tasks, collators, strict=True):
            logits = predict_logits(model, name, td.validation, col, train_cfg.batch_size * 2, composition=Single(name))
            metrics.update({f"{name}/{k}": v for k, v in score(td.task, logits, td.validation).items()})
        metrics["mean"] = sum(metrics[f"{n}/{td.task.metric}"] for n, td in zip(names, tasks, strict=True)) / len(tasks)
        return metrics

    def evaluate(_: Sequence[Example]) -> dict[str, float]:
        metrics = validate()
        snapshots.append((metrics, {n: {k: p.detach().clone() for k, p in ps.items()} for n, ps in own.items()}))
        return metrics

    for p in base.model.parameters():
        p.requires_grad_(True)
    params = {f"encoder.{k}": p for k, p in base.model.named_parameters()}
    for ps in own.values():
        params.update(ps)
    objective = Objective(
        module=model,
        params=params,
        loss=loss,
        evaluate=evaluate,
        metric="mean",
        learning_rates={"encoder.": base_learning_rate},
    )
    has_val = all(td.validation for td in tasks)
    plan = multitask_plan([len(td.train) for td in tasks], train_cfg.batch_size, alpha, train_cfg.seed)
    try:
        result = fit(
            objective,
            train,
            train if has_val else [],
            collate,
            train_cfg,
            callbacks,
            resume=resume,
            device=model.device,
            plan=plan,
        )
    finally:
        for p in base.model.parameters():
            p.requires_grad_(False)
    model.eval()
    selection = {n: {"step": float(result.steps), **_task_metrics(result.best_metrics, n)} for n in names}
    if has_val and snapshots:
        selection = _pick_per_task(model, names, tasks, own, snapshots, validate, result)
    return MultitaskRun(model=model, names=names, result=result, max_length=train_cfg.max_length, selection=selection)


def _task_metrics(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{name}/")}


def _pick_per_task(model, names, tasks, own, snapshots, validate, result):  # type: ignore[no-untyped-def]
    """With the base at its best-mean evaluation (fit restored it), give each task the adapter and head of
    the evaluation where that task scores best on this base."""
    best: dict[str, tuple[float, int, dict[str, float]]] = {}
    with torch.no_grad():
        for i, (_, state) in enumerate(snapshots):
            for n in names:
                for k, p in own[n].items():
                    p.copy_(state[n][k])
            metrics = validate()
            for n, td in zip(names, tasks, strict=True):
                value = metrics[f"{n}/{td.task.metric}"]
                if n not in best or value > best[n][0]:
                    best[n] = (value, i, _task_metrics(metrics, n))
        for n in names:
            for k, p in own[n].items():
                p.copy_(snapshots[best[n][1]][1][n][k])
    return {n: {"evaluation": float(i), **m} for n, (_, i, m) in best.items()}
