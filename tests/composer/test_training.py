"""The ST-A training loop: frozen base, learning, exact resume, cancellation, early stopping."""

from __future__ import annotations

import pytest
import torch

from composer.adapter_training import train_st_adapter
from composer.base import load_base
from composer.data import Example, infer_task
from composer.errors import ConfigError, TrainingCancelled
from composer.presets import preset
from composer.training import Callback, TrainConfig


@pytest.fixture()
def toy(toy_rows):
    ex = [Example(r["text"], r["label"]) for r in toy_rows]
    return infer_task(ex), ex


class Recorder(Callback):
    def __init__(self, cancel_at: int | None = None):
        self.steps: list[int] = []
        self.checkpoints: list[tuple[int, bytes]] = []
        self.evals: list[dict] = []
        self.cancel_at = cancel_at

    def on_step(self, step, total, epoch, loss, lr):
        self.steps.append(step)

    def on_evaluate(self, step, epoch, metrics):
        self.evals.append(metrics)

    def on_checkpoint(self, step, payload):
        self.checkpoints.append((step, payload))

    def should_cancel(self):
        return self.cancel_at is not None and len(self.steps) >= self.cancel_at


CFG = TrainConfig(learning_rate=1e-2, epochs=12, batch_size=4, patience=0, checkpoint_every_steps=5, seed=3)


def test_training_learns_and_leaves_base_bit_identical(tiny_bert_dir, toy):
    task, ex = toy
    base = load_base(tiny_bert_dir)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    run = train_st_adapter(base, task, ex, ex, preset("seq_bn", reduction_factor=4), CFG)
    assert run.result.best_metrics["accuracy"] >= 0.9  # the toy task is separable; chance is 0.5
    after = base.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in base.model.parameters())


def test_resume_from_checkpoint_equals_uninterrupted_run(tiny_bert_dir, toy):
    task, ex = toy
    full = train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, preset("seq_bn", reduction_factor=4), CFG)
    rec = Recorder(cancel_at=13)
    with pytest.raises(TrainingCancelled):
        train_st_adapter(
            load_base(tiny_bert_dir), task, ex, ex, preset("seq_bn", reduction_factor=4), CFG, callbacks=[rec]
        )
    step, payload = rec.checkpoints[-1]
    assert 0 < step < full.result.steps
    resumed = train_st_adapter(
        load_base(tiny_bert_dir), task, ex, ex, preset("seq_bn", reduction_factor=4), CFG, resume=payload
    )
    assert resumed.result.resumed_at == step
    assert resumed.result.steps == full.result.steps
    a = full.model.adapters[full.name].state_dict()
    b = resumed.model.adapters[resumed.name].state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_cancel_stops_at_a_step_boundary(tiny_bert_dir, toy):
    task, ex = toy
    rec = Recorder(cancel_at=2)
    with pytest.raises(TrainingCancelled):
        train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, preset("seq_bn"), CFG, callbacks=[rec])
    assert rec.steps == [1, 2]


def test_early_stopping_stops_when_the_metric_stalls(tiny_bert_dir, toy):
    task, ex = toy
    cfg = TrainConfig(learning_rate=1e-9, epochs=20, batch_size=4, patience=2)  # nothing can improve
    rec = Recorder()
    run = train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, preset("seq_bn"), cfg, callbacks=[rec])
    assert run.result.stopped_early
    assert len(rec.evals) == 3  # the first sets the best, two more without improvement stop it
    assert run.result.steps == 3 * 3


@pytest.mark.parametrize(
    "kwargs",
    [{"learning_rate": 0}, {"learning_rate": -1.0}, {"epochs": 0}, {"batch_size": 0}, {"warmup_ratio": 1.0}],
)
def test_bad_hyperparameters_are_refused(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(ConfigError, match="unknown hyperparameters"):
        TrainConfig.from_dict({"learning_rate": 1e-3, "lr_typo": 1})


def test_regression_head_fits_a_sentence_pair_score(tiny_bert_dir):
    from composer.data import TaskSpec
    from composer.heads import HeadConfig

    pairs = [
        ("good movie", "great film", 0.9),
        ("bad movie", "great film", 0.1),
        ("awful plot", "poor story", 0.8),
        ("happy actor", "sad actor", 0.2),
        ("funny story", "funny film", 0.9),
        ("boring food", "fresh food", 0.1),
    ]
    ex = [Example(a, y, text_pair=b) for a, b, y in pairs]
    task = TaskSpec(kind="regression", metric="pearson")
    cfg = TrainConfig(learning_rate=1e-2, epochs=40, batch_size=3, patience=0)
    head = HeadConfig(kind="regression", pooling="mean", dropout=0.0)
    run = train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, preset("seq_bn", reduction_factor=4), cfg, head)
    assert run.result.best_metrics["pearson"] > 0.9  # fits the training pairs
    assert set(run.result.best_metrics) == {"pearson", "spearman", "mse"}


def test_adalora_resumes_exactly_with_its_rank_allocation(tiny_bert_dir, toy):
    """The allocator's importance EMAs and mask ride in the checkpoint: a resumed AdaLoRA ends where an
    uninterrupted one does, pruned the same way."""
    task, ex = toy
    cfg = preset("adalora", init_r=4, target_r=2, tinit=3, tfinal=6, deltaT=2)
    full = train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, cfg, CFG)
    rec = Recorder(cancel_at=13)
    with pytest.raises(TrainingCancelled):
        train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, cfg, CFG, callbacks=[rec])
    step, payload = rec.checkpoints[-1]
    assert 3 < step < full.result.steps - 6  # inside the falling budget: the EMAs and a mask are in flight
    resumed = train_st_adapter(load_base(tiny_bert_dir), task, ex, ex, cfg, CFG, resume=payload)
    assert resumed.result.steps == full.result.steps
    a, b = full.artifact(task), resumed.artifact(task)
    assert a.config.rank_pattern == b.config.rank_pattern
    for k in a.tensors:
        torch.testing.assert_close(a.tensors[k], b.tensors[k], atol=0, rtol=0)
