"""A small, resumable training loop shared by adapters, fusion and prompts.

AdamW with linear warmup/decay, gradient clipping, early stopping on the validation
metric, a fixed seed, and callbacks for progress, checkpoints and cancellation. A
checkpoint holds the trainables, the optimizer, the scheduler, the RNG state and the
data position, so a resumed run continues exactly where the last checkpoint was taken.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from composer import checkpoint
from composer.data import Example, batches, epoch_order
from composer.errors import ConfigError, TrainingCancelled


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-3
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 128
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    patience: int = 3  # evaluations without improvement before stopping; 0 disables early stopping
    eval_every_steps: int = 0  # 0: evaluate at the end of each epoch
    checkpoint_every_steps: int = 0  # 0: checkpoint at the end of each epoch only
    max_steps: int = 0  # 0: no cap
    seed: int = 0
    base_dropout: bool = False  # dropout inside the frozen base while training (AdapterHub's behaviour)

    def __post_init__(self) -> None:
        checks = [
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (
                min(self.patience, self.eval_every_steps, self.checkpoint_every_steps, self.max_steps) >= 0,
                "counts must be >= 0",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown hyperparameters: {unknown}")
        return cls(**d)


class Callback:
    """Hooks called by `fit`. Override what you need."""

    def on_start(self, total_steps: int, resumed_at: int) -> None: ...
    def on_step(self, step: int, total: int, epoch: int, loss: float, lr: float) -> None: ...
    def on_evaluate(self, step: int, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, step: int, payload: bytes) -> None: ...
    def should_cancel(self) -> bool:
        return False


@dataclass
class Objective:
    """What `fit` trains: named trainable parameters, a loss and a scorer over validation data."""

    module: nn.Module
    params: dict[str, nn.Parameter]
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    evaluate: Callable[[Sequence[Example]], dict[str, float]]
    metric: str
    extra_state: dict[str, Any] = field(default_factory=dict)
    # parameters that train at their own learning rate, by name prefix (a fine-tuned base: "encoder.") or by
    # glob ("*.prior"); the first match wins
    learning_rates: dict[str, float] = field(default_factory=dict)
    # a method's own training steps (an AdaLoRA's rank allocation): `check(total)`, `penalty()` added to the
    # loss, `after_step(step, total)` after the optimiser step with the gradients still there, and
    # `state()`/`load_state()` carried in checkpoints
    hooks: Any = None


@dataclass
class TrainResult:
    steps: int
    best_score: float | None
    best_metrics: dict[str, float]
    history: list[dict[str, Any]]
    stopped_early: bool
    resumed_at: int
    best_step: int | None = None  # the step of the kept evaluation; 0 is the one before training (if asked)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def fit(
    objective: Objective,
    train: Sequence[Example],
    validation: Sequence[Example],
    collate: Callable[[Sequence[Example]], dict[str, torch.Tensor]],
    cfg: TrainConfig,
    callbacks: Sequence[Callback] = (),
    resume: bytes | None = None,
    device: torch.device | None = None,
    plan: Callable[[int], list[list[int]]] | None = None,
    evaluate_at_start: bool = False,
) -> TrainResult:
    """Train `objective`. `plan(epoch)` gives the batches of one epoch as index lists into `train`
    (default: a seeded shuffle cut into batch_size pieces); it must be a pure function of the epoch."""
    if not train:
        raise ConfigError("the training set is empty")
    device = device or next(iter(objective.params.values())).device
    params = objective.params
    plan = plan or (lambda epoch: batches(epoch_order(len(train), cfg.seed, epoch), cfg.batch_size))
    steps_per_epoch = len(plan(0))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = int(cfg.warmup_ratio * total)
    hooks = objective.hooks
    if hooks is not None:
        hooks.check(total)

    def lr_of(name: str) -> float:
        def match(key: str) -> bool:
            return fnmatch.fnmatchcase(name, key) if any(c in key for c in "*?[") else name.startswith(key)

        return next((lr for key, lr in objective.learning_rates.items() if match(key)), cfg.learning_rate)

    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in params.items():
        groups.setdefault(lr_of(name), []).append(p)
    opt = torch.optim.AdamW(
        [{"params": ps, "lr": lr} for lr, ps in groups.items()], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    s: dict[str, Any] = {"epoch": 0, "pos": 0, "step": 0, "best": None, "best_metrics": {}, "bad": 0, "history": []}
    best_params: dict[str, torch.Tensor] | None = None
    torch.manual_seed(cfg.seed)
    if resume is not None:
        ck = checkpoint.unpack(resume)
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(ck["params"][k])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        s = ck["loop"]
        best_params = ck.get("best_params")
        if hooks is not None:
            hooks.load_state(ck["hooks"])
    resumed_at = s["step"]
    for cb in callbacks:
        cb.on_start(total, resumed_at)

    def save_checkpoint() -> None:
        payload = checkpoint.pack(
            {
                "params": {k: p for k, p in params.items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": _rng_state(),
                "loop": s,
                "best_params": best_params,
                "hooks": hooks.state() if hooks is not None else None,
            }
        )
        for cb in callbacks:
            cb.on_checkpoint(s["step"], payload)

    def evaluate() -> bool:
        nonlocal best_params
        objective.module.eval()
        with torch.no_grad():
            metrics = objective.evaluate(validation)
        score = metrics[objective.metric]
        s["history"].append({"step": s["step"], "epoch": s["epoch"], **metrics})
        for cb in callbacks:
            cb.on_evaluate(s["step"], s["epoch"], metrics)
        if s["best"] is None or score > s["best"]:
            s["best"], s["best_metrics"], s["bad"], s["best_step"] = score, metrics, 0, s["step"]
            best_params = {k: p.detach().clone() for k, p in params.items()}
        else:
            s["bad"] += 1
        return bool(cfg.patience and s["bad"] >= cfg.patience)

    stop = s.get("stopped", False)
    if evaluate_at_start and validation and s["step"] == 0 and not s["history"]:
        evaluate()  # the starting point is a candidate: training must beat it to replace it
    while not stop and s["epoch"] < cfg.epochs:
        epoch_plan = plan(s["epoch"])
        while s["pos"] < len(epoch_plan):
            if any(cb.should_cancel() for cb in callbacks):
                raise TrainingCancelled(f"cancelled at step {s['step']}")
            objective.module.train()
            batch = {k: v.to(device) for k, v in collate([train[i] for i in epoch_plan[s["pos"]]]).items()}
            loss = objective.loss(batch)
            if hooks is not None:
                loss = loss + hooks.penalty()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {s['step']}; lower the learning rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
            opt.step()
            if hooks is not None:
                hooks.after_step(s["step"], total)
            sched.step()
            opt.zero_grad(set_to_none=True)
            s["step"] += 1
            s["pos"] += 1
            for cb in callbacks:
                cb.on_step(s["step"], total, s["epoch"], float(loss.item()), sched.get_last_lr()[0])
            at_end = s["pos"] == len(epoch_plan)
            capped = bool(cfg.max_steps) and s["step"] >= cfg.max_steps
            if validation and cfg.eval_every_steps and s["step"] % cfg.eval_every_steps == 0 and not at_end:
                stop = evaluate()
            if stop or capped:
                break
            if cfg.checkpoint_every_steps and s["step"] % cfg.checkpoint_every_steps == 0 and not at_end:
                save_checkpoint()
        if validation and not stop:
            stop = evaluate() or stop
        if s["pos"] >= len(epoch_plan):
            s["epoch"], s["pos"] = s["epoch"] + 1, 0
        if cfg.max_steps and s["step"] >= cfg.max_steps:
            stop = True
        s["stopped"] = stop
        save_checkpoint()
    if best_params is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(best_params[k])
    objective.module.eval()
    return TrainResult(
        steps=s["step"],
        best_score=s["best"],
        best_metrics=s["best_metrics"],
        history=s["history"],
        stopped_early=bool(s.get("stopped")) and s["epoch"] < cfg.epochs,
        resumed_at=resumed_at,
        best_step=s.get("best_step"),
    )


def logits_to_numpy(chunks: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(chunks).float().cpu().numpy()
