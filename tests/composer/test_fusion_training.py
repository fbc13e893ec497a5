"""Fusion training (frozen members, regulariser in the loss), attention reports, pruning, and MT-A training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from composer import adapter_artifact as artifacts
from composer.adapter_training import train_st_adapter
from composer.base import load_base
from composer.bottleneck.multitask import TaskData, multitask_plan, sampling_weights, train_multitask
from composer.composition import Fuse, Single
from composer.data import Collator, Example, TaskSpec
from composer.errors import ConfigError
from composer.fusion.modules import FusionConfig
from composer.fusion.training import attention_report, build_fused_model, prune_members, pruned, train_fusion
from composer.presets import preset
from composer.training import TrainConfig
from tests.workers.fixtures import toy_rows

TASK = TaskSpec("sent", labels=("neg", "pos"))
FLIP = TaskSpec("flip", labels=("neg", "pos"))


def examples(n: int, seed: int = 0, flip: bool = False) -> list[Example]:
    out = []
    for r in toy_rows(n, seed):
        label = {"pos": "neg", "neg": "pos"}[r["label"]] if flip else r["label"]
        out.append(Example(r["text"], label))
    return out


@pytest.fixture(scope="module")
def members(tiny_bert_dir):
    cfg = TrainConfig(learning_rate=1e-2, epochs=4, batch_size=4, patience=0)
    arts = []
    for task, flip in ((TASK, False), (FLIP, True)):
        data = examples(32, seed=3, flip=flip)
        run = train_st_adapter(load_base(tiny_bert_dir), task, data, data, preset("seq_bn", reduction_factor=4), cfg)
        arts.append(run.artifact(task))
    return arts


def test_fusion_training_learns_only_fusion_and_head(tiny_bert_dir, members):
    base = load_base(tiny_bert_dir)
    base_before = {k: v.clone() for k, v in base.model.state_dict().items()}
    train = examples(32, seed=3)  # the tiny random model barely generalises: check that the fusion fits
    cfg = TrainConfig(learning_rate=3e-2, epochs=15, batch_size=8, patience=0)
    run = train_fusion(base, TASK, train, train, members, FusionConfig(dropout=0.0), cfg)
    assert run.result.best_metrics["accuracy"] >= 0.75  # chance is 0.5
    for i, art in enumerate(members):
        trained = run.model.adapters[f"m{i}"].state_dict()
        for k, v in trained.items():
            assert torch.equal(v.cpu(), art.tensors[f"adapter.{k}"])  # members frozen
    assert all(torch.equal(base_before[k], v) for k, v in base.model.state_dict().items())
    fusion = run.model.fusions["fusion"]
    moved = max((lay.value.weight - torch.eye(32)).abs().max().item() for lay in fusion.sites.values())
    assert moved > 0  # V learned


def test_regulariser_is_part_of_the_loss(tiny_bert_dir, members):
    model, names = build_fused_model(load_base(tiny_bert_dir), members, FusionConfig(regularization=0.01))
    fusion = model.fusions["fusion"]
    assert fusion.regularization().item() == 0.0  # V starts at the identity
    with torch.no_grad():
        for lay in fusion.sites.values():
            lay.value.weight.add_(0.1)
    expected = 0.01 * sum(((torch.eye(32) - lay.value.weight) ** 2).sum() for lay in fusion.sites.values())
    torch.testing.assert_close(fusion.regularization(), expected)
    fusion.regularization().backward()
    lay = next(iter(fusion.sites.values()))
    torch.testing.assert_close(lay.value.weight.grad, -2 * 0.01 * (torch.eye(32) - lay.value.weight.detach()))


def test_shared_and_static_fusions(tiny_bert_dir, members):
    model, _ = build_fused_model(load_base(tiny_bert_dir), members, FusionConfig(shared=True, value=False), "s")
    n_params = sum(p.numel() for p in model.fusions["s"].parameters())
    assert n_params == 2 * (32 * 32 + 32) + len(members)  # one Q and one K for every site, no V; a prior per member
    batch = model.base.tokenizer(["good movie"], return_tensors="pt")
    assert model(**batch, composition=Fuse("s")).hidden.shape == (1, 4, 32)


def test_attention_report_and_pruning(tiny_bert_dir, members):
    model, names = build_fused_model(load_base(tiny_bert_dir), members, FusionConfig(dropout=0.0))
    data = examples(12, seed=9)
    col = Collator(model.base.tokenizer, TASK)
    report = attention_report(model, "fusion", data, col)
    assert report["members"] == names and len(report["top_adapter"]) == 12
    assert sum(report["mean_attention"]) == pytest.approx(1.0, abs=1e-3)
    batch = {k: v for k, v in col(data).items() if k != "labels"}
    with torch.no_grad():
        out = model(**batch, composition=Fuse("fusion"), return_fusion_attention=True)
        full = out.hidden
    # per layer: each site's attention averaged over the examples (one batch here), as the forward returns it
    assert list(report["per_layer"]) == list(out.fusion_attention)
    for site, att in out.fusion_attention.items():
        assert report["per_layer"][site] == pytest.approx(att.mean(0).tolist(), abs=1e-4)
    with torch.no_grad():
        same = pruned(model, "fusion", names, "all")
        assert torch.allclose(model(**batch, composition=Fuse(same)).hidden, full, atol=1e-6)
        keep = prune_members(report, threshold=max(report["mean_attention"]))
        assert len(keep) == 1
        with pytest.raises(ConfigError, match="at least 2"):
            pruned(model, "fusion", keep, "one")


def test_fusing_adapters_with_different_placements_is_refused(tiny_bert_dir, members):
    base = load_base(tiny_bert_dir)
    from composer.encoder import AdaptedEncoder

    m = AdaptedEncoder(base)
    artifacts.attach(m, members[0], name="a")
    m.add_adapter("h", preset("double_seq_bn", reduction_factor=4))
    with pytest.raises(ConfigError, match="placements"):
        m.add_fusion("f", ["a", "h"], FusionConfig())
    with pytest.raises(ConfigError, match="once"):
        m.add_fusion("f", ["a", "a"], FusionConfig())


def test_multitask_sampling_follows_size_to_the_alpha():
    torch.testing.assert_close(sampling_weights([100, 400], 0.5), torch.tensor([1 / 3, 2 / 3]))
    torch.testing.assert_close(sampling_weights([100, 400], 1.0), torch.tensor([0.2, 0.8]))
    plan = multitask_plan([100, 400], batch_size=4, alpha=0.5, seed=0)
    batches = plan(0) + plan(1) + plan(2)
    small = sum(all(i < 100 for i in b) for b in batches)
    assert all(all(i < 100 for i in b) or all(i >= 100 for i in b) for b in batches)  # one task per batch
    assert small / len(batches) == pytest.approx(1 / 3, abs=0.05)
    assert plan(0) == multitask_plan([100, 400], 4, 0.5, 0)(0)  # a pure function of the epoch (resumable)


def test_multitask_fine_tunes_the_base_jointly_into_a_derived_base(tiny_bert_dir):
    from composer import adapter_artifact as artifacts
    from composer.adapter_training import predict_logits
    from composer.base import derive
    from composer.data import Collator
    from composer.encoder import AdaptedEncoder
    from composer.errors import IncompatibleBaseError
    from composer.metrics import score

    base = load_base(tiny_bert_dir)
    parent = base.identity
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    sent, flip = examples(32, 1), examples(16, 3, True)
    tasks = [TaskData(TASK, sent, sent), TaskData(FLIP, flip, flip)]  # fit checks: the tiny model barely generalises
    cfg = TrainConfig(learning_rate=1e-2, epochs=8, batch_size=4, patience=0)
    run = train_multitask(base, tasks, preset("seq_bn", reduction_factor=4), cfg, base_learning_rate=1e-3)
    m = run.result.best_metrics
    assert m["sent/accuracy"] >= 0.75 and m["flip/accuracy"] >= 0.75 and "mean" in m
    # Θ was fine-tuned with the adapters (§2.2), and is frozen again afterwards
    assert any(not torch.equal(before[k], v) for k, v in base.model.state_dict().items())
    assert not any(p.requires_grad for p in base.model.parameters())
    derived = run.derive_base("tiny+mt")
    assert derived.fingerprint != parent.fingerprint and derived.config_hash == parent.config_hash
    arts = run.artifacts(tasks)
    assert [a.kind for a in arts] == ["mt_a", "mt_a"] and all(a.base == derived for a in arts)
    # each task's pick is its best evaluation on the derived base, and its metrics are what that base scores
    weights = run.base_weights()
    fresh = load_base(tiny_bert_dir)
    with pytest.raises(IncompatibleBaseError):
        artifacts.attach(AdaptedEncoder(fresh), arts[0])  # an MT-A never serves on the parent
    assert derive(fresh, "tiny+mt", weights) == derived  # the stored weights reproduce the identity
    model = AdaptedEncoder(fresh).eval()
    for art, td in zip(arts, tasks, strict=True):
        name = artifacts.attach(model, art)
        col = Collator(fresh.tokenizer, td.task, cfg.max_length)
        got = score(td.task, predict_logits(model, name, td.validation, col, composition=Single(name)), td.validation)
        assert (
            got["accuracy"] == pytest.approx(art.metrics["accuracy"]) == pytest.approx(run.selection[name]["accuracy"])
        )
        assert run.selection[name]["accuracy"] >= m[f"{name}/accuracy"] - 1e-9  # never below the joint pick
    with pytest.raises(ConfigError, match="at least 2"):
        train_multitask(load_base(tiny_bert_dir), tasks[:1], preset("seq_bn"), cfg)


def test_stacked_site_equals_each_adapter_alone_even_with_different_sizes(tiny_bert_dir):
    from composer.encoder import AdaptedEncoder
    from composer.fusion.modules import StackedSite

    model = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    model.add_adapter("small", preset("seq_bn", reduction_factor=16))  # bottleneck 2
    model.add_adapter("big", preset("seq_bn", reduction_factor=4))  # bottleneck 8
    assert not model.adapters["big"].training  # added to an eval model: stays in eval mode
    layers = [model.adapters[n].sites["L0_ffn"] for n in ("small", "big")]
    with torch.no_grad():
        for lay in layers:
            for p in lay.parameters():
                p.normal_(0, 0.3)
        h = torch.randn(5, 32)
        stacked = StackedSite(layers).ups(h)
        for i, lay in enumerate(layers):
            torch.testing.assert_close(stacked[:, i], lay.delta(h), atol=1e-6, rtol=0)
    model.add_fusion("f", ["small", "big"], FusionConfig())
    assert not model.fusions["f"].training


def test_a_warm_started_fusion_starts_as_the_targets_adapter_and_never_ends_below_it(tiny_bert_dir, members):
    from composer import adapter_artifact as artifacts
    from composer.adapter_training import predict_logits
    from composer.data import Collator
    from composer.encoder import AdaptedEncoder
    from composer.fusion.training import fusion_model

    base = load_base(tiny_bert_dir)
    flip, sent = members[1], members[0]  # the target task is "sent": its own adapter is member 1 below
    ordered = [flip, sent]
    val = examples(24, seed=5)
    collate = Collator(base.tokenizer, TASK, 64)
    # step 0: the fused logits are the ST-A's (its head, attention on it, V = I)
    fused = fusion_model(base, TASK, ordered, FusionConfig(), "f", start=1).eval()
    alone = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    name = artifacts.attach(alone, sent)
    want = predict_logits(alone, name, val, collate, composition=Single(name))
    got = predict_logits(fused, "f", val, collate, composition=Fuse("f"))
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # a cold start (fresh head, uniform attention) does not start there
    cold = fusion_model(base, TASK, ordered, FusionConfig(), "c").eval()
    assert (predict_logits(cold, "c", val, collate, composition=Fuse("c")) - want).abs().max() > 1e-3
    # selection: the registered fusion scores at least its start on validation, by construction
    cfg = TrainConfig(learning_rate=3e-1, epochs=3, batch_size=8, patience=0)  # a rate far too high on purpose
    run = train_fusion(base, TASK, examples(32, seed=3), val, ordered, FusionConfig(), cfg, start=1)
    start = run.result.history[0]
    assert start["step"] == 0 and run.result.best_metrics["accuracy"] >= start["accuracy"]
    assert run.winner.startswith(("epoch", "none: the fusion did not improve"))
    with pytest.raises(ConfigError, match="warm start"):
        fusion_model(base, TaskSpec("x", labels=("a", "b")), ordered, FusionConfig(), "x", start=1)


def test_a_warm_starts_priors_learn_at_a_rate_that_can_cross_their_margin(tiny_bert_dir, members):
    """Adam moves a parameter about its learning rate per step: at the fusion's 1e-3 a prior 12 above the others
    would never move, and the warm fusion could only ever be its start. The priors get margin / steps-per-epoch."""
    from composer.fusion.modules import WARM_MARGIN

    cfg = TrainConfig(learning_rate=1e-3, epochs=3, batch_size=8, patience=0)
    train = examples(64, seed=4)
    # no validation: no selection, the trained priors are what is returned
    run = train_fusion(load_base(tiny_bert_dir), TASK, train, [], members[::-1], FusionConfig(), cfg, start=1)
    moved = max(
        (lay.prior - torch.tensor([0.0, WARM_MARGIN])).abs().max().item()
        for lay in run.model.fusions["fusion"].layers()
    )
    steps = run.result.steps
    assert steps == 24 and moved > 20 * cfg.learning_rate * steps  # far beyond what the fusion's own rate allows
    assert moved <= WARM_MARGIN / 8 * steps + 1e-3  # and within the prior's rate: 12 / 8 steps per epoch


def test_mcnemar_p_is_the_exact_binomial_tail_over_the_rows_that_changed():
    from composer.metrics import mcnemar_p

    before = np.array([1, 1, 0, 0, 0, 1, 1, 0], dtype=bool)
    after = np.array([1, 0, 1, 1, 1, 1, 1, 0], dtype=bool)  # 3 rows gained, 1 lost, 4 unchanged
    assert mcnemar_p(before, after) == (5 / 16, 3, 1)  # P(X >= 3 | n = 4, 1/2) = (4 + 1) / 16
    assert mcnemar_p(before, before) == (1.0, 0, 0)
    assert mcnemar_p(np.zeros(6, bool), np.ones(6, bool))[0] == 1 / 64


def test_a_warm_fusion_keeps_its_start_unless_its_gain_is_significant(tiny_bert_dir, members):
    from composer import adapter_artifact as artifacts
    from composer.adapter_training import predict_logits
    from composer.data import Collator
    from composer.encoder import AdaptedEncoder

    base, val = load_base(tiny_bert_dir), examples(24, seed=5)
    collate = Collator(base.tokenizer, TASK, 64)
    cfg = TrainConfig(learning_rate=3e-2, epochs=4, batch_size=8, patience=0)
    train = examples(64, seed=4)
    kept = train_fusion(base, TASK, train, val, members[::-1], FusionConfig(), cfg, start=1, significance=1.01)
    assert kept.result.best_step > 0 and kept.significance["kept"]  # an epoch beat the start here
    # no gain is significant at level 0: the start comes back
    back = train_fusion(
        load_base(tiny_bert_dir), TASK, train, val, members[::-1], FusionConfig(), cfg, start=1, significance=0.0
    )
    sig = back.significance
    assert sig is not None and not sig["kept"] and sig["gained"] > sig["lost"]
    assert back.result.best_step == 0 and back.winner.startswith("none: its best epoch gained")
    assert back.result.best_metrics["accuracy"] == back.result.history[0]["accuracy"]
    alone = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    name = artifacts.attach(alone, members[0])
    want = predict_logits(alone, name, val, collate, composition=Single(name))
    got = predict_logits(back.model, "fusion", val, collate, composition=Fuse("fusion"))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # the start itself, the ST-A's logits
    assert back.significance["p"] == kept.significance["p"]  # the same run, judged at another level
