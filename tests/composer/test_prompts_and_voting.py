"""Prompt training, the batched ensemble forward, voting strategies, and exact early exit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from composer.base import load_base
from composer.data import Collator, TaskSpec
from composer.errors import ConfigError
from composer.prompts.ensemble import predict_ensemble, vote
from composer.prompts.prompt import PromptConfig
from composer.prompts.training import train_prompts
from composer.training import TrainConfig
from tests.composer.test_fusion_training import examples

TASK = TaskSpec("sent", labels=("neg", "pos"))


class FakePrompts:
    """Stands in for PromptModel: logits for (row, prompt) come from a fixed table, so early exit can be
    checked against the full vote over thousands of random cases."""

    def __init__(self, table: torch.Tensor):
        self.table, self.calls = table, []

    def check_batchable(self, names):
        if not names:
            raise ConfigError("K = 0")

    def logits(self, names, batch, plan="batched"):
        rows = batch["row"]
        self.calls.append((len(rows), len(names)))
        cols = [int(n) for n in names]
        return self.table[rows][:, cols]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.integers(3, 9), st.integers(2, 4), st.integers(0, 2**31 - 1), st.booleans())
def test_early_exit_labels_equal_the_full_vote(b, k, c, seed, discrete):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(b, k, c, generator=gen)
    if discrete:  # many exact ties
        table = torch.randint(0, 2, (b, k, c), generator=gen).float()
    scores = torch.rand(k, generator=gen).tolist()
    names = [str(j) for j in range(k)]
    full = predict_ensemble(FakePrompts(table), names, {"row": torch.arange(b)}, scores=scores)
    fake = FakePrompts(table)
    fast = predict_ensemble(fake, names, {"row": torch.arange(b)}, scores=scores, early_exit=True)
    assert [r.label for r in fast] == [r.label for r in full]
    m = k // 2 + 1
    for r in fast:
        skipped = sum(p is None for p in r.per_prompt)
        assert (skipped == k - m) if r.early_exit else skipped == 0
    assert fake.calls[0] == (b, m) and all(n == k - m for _, n in fake.calls[1:])


def test_voting_strategies_on_hand_made_logits():
    # 3 prompts, 2 labels. Prompt 0 and 1 vote label 0 weakly, prompt 2 votes label 1 strongly.
    logits = torch.tensor([[[0.1, 0.0], [0.2, 0.0], [0.0, 5.0]]])
    assert vote(logits, "majority")[0].label == 0
    assert vote(logits, "majority")[0].counts == [2.0, 1.0]
    assert vote(logits, "mean_prob")[0].label == 1
    assert vote(logits, "mean_logit")[0].label == 1
    assert vote(logits, "weighted", scores=[0.1, 0.1, 0.9])[0].label == 1
    assert vote(logits, "weighted", scores=[0.9, 0.9, 0.1])[0].label == 0
    tie = vote(torch.tensor([[[1.0, 0.0], [0.0, 3.0]]]), "majority")[0]
    assert tie.tie_break and tie.label == 1  # 1-1, broken by the mean probability
    with pytest.raises(ConfigError, match="unknown voting"):
        vote(logits, "plurality")
    with pytest.raises(ConfigError, match="validation score"):
        vote(logits, "weighted", scores=[0.5, None, 0.5])


def test_prompts_train_as_one_batched_model_and_ensemble_in_one_forward(tiny_bert_dir):
    base = load_base(tiny_bert_dir)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    data = examples(32, seed=3)
    cfg = TrainConfig(learning_rate=3e-2, epochs=15, batch_size=8, patience=0)
    run = train_prompts(base, TASK, data, data, 3, PromptConfig(length=4), cfg)
    assert run.result.best_metrics["mean"] >= 0.7  # fits the toy task (chance 0.5)
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())
    arts = run.artifacts(TASK)
    assert [a.name for a in arts] == ["p0", "p1", "p2"] and "accuracy" in arts[0].metrics
    assert not torch.equal(arts[0].prompt, arts[1].prompt)  # different inits
    batch = {k: v for k, v in Collator(base.tokenizer, TASK)(data[:5]).items() if k != "labels"}
    run.model.eval()
    with torch.no_grad():
        together = run.model.logits(run.names, batch)
        for i, n in enumerate(run.names):  # one batched forward == K separate forwards
            torch.testing.assert_close(together[:, i], run.model.logits([n], batch)[:, 0], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="K >= 1"):
        run.model.logits([], batch)
    with pytest.raises(ConfigError, match="unknown prompts"):
        run.model.logits(["p0", "nope"], batch)
    scores = [a.metrics["accuracy"] for a in arts]
    full = predict_ensemble(run.model, run.names, batch, "majority", scores)
    fast = predict_ensemble(run.model, run.names, batch, "majority", scores, early_exit=True)
    assert [r.label for r in full] == [r.label for r in fast]
    with pytest.raises(ConfigError, match="majority"):
        predict_ensemble(run.model, run.names, batch, "mean_prob", scores, early_exit=True)


@pytest.mark.parametrize(
    ("prompt", "kind", "shape"),
    [
        (PromptConfig(length=3, kind="deep", reparam_hidden=16), "prefix", (2, 2, 3, 32)),  # prefix tuning's MLP
        (PromptConfig(length=3, kind="deep", positions="from_zero"), "prefix", (2, 2, 3, 32)),  # P-tuning v2, flat
        (PromptConfig(length=3, encoder="mlp", encoder_hidden=16), "p_tuning", (3, 32)),  # P-tuning v1's encoders
        (PromptConfig(length=3, encoder="lstm", encoder_hidden=8), "p_tuning", (3, 32)),
    ],
    ids=["prefix-mlp", "prefix-flat-from-zero", "p-tuning-mlp", "p-tuning-lstm"],
)
def test_reparameterised_prompts_train_collapse_and_stay_padding_invariant(tiny_bert_dir, prompt, kind, shape):
    from composer.prompts.artifacts import from_files, to_files
    from composer.prompts.model import PromptModel
    from composer.safetensors_io import tensors_from_bytes

    base = load_base(tiny_bert_dir)
    data = examples(32, seed=3)
    cfg = TrainConfig(learning_rate=1e-2, epochs=15, batch_size=8, patience=0)
    run = train_prompts(base, TASK, data, data, 2, prompt, cfg)
    assert run.result.best_metrics["mean"] >= 0.7
    arts = run.artifacts(TASK)
    # the encoder or MLP folds into plain tensors on save: the artifact holds the prompt and the head only
    assert arts[0].kind == kind and arts[0].prompt.shape == shape
    assert arts[0].config.collapsed == prompt.reparameterised
    assert set(tensors_from_bytes(to_files(arts[0])[1])) == {"prompt.embedding", "head.out.weight", "head.out.bias"}
    batch = {k: v for k, v in Collator(base.tokenizer, TASK)(data[:4]).items() if k != "labels"}
    run.model.eval()
    fresh = PromptModel(load_base(tiny_bert_dir)).eval()
    names = [fresh.attach(from_files(*to_files(a))) for a in arts]
    with torch.no_grad():
        torch.testing.assert_close(fresh.logits(names, batch), run.model.logits(run.names, batch), atol=1e-5, rtol=0)
        n = int(batch["attention_mask"][0].sum())  # row 0 alone, unpadded, equals row 0 in the padded batch
        alone = {k: v[:1, :n] for k, v in batch.items()}
        torch.testing.assert_close(fresh.logits(names, alone)[0], fresh.logits(names, batch)[0], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="reparam_hidden"):
        PromptConfig(kind="shallow", reparam_hidden=8)
    with pytest.raises(ConfigError, match="encoder"):
        PromptConfig(kind="deep", encoder="mlp", encoder_hidden=8)
    with pytest.raises(ConfigError, match="positions"):
        PromptConfig(kind="shallow", positions="from_zero")


def _ensemble_model(tiny_bert_dir, k: int = 5):  # type: ignore[no-untyped-def]
    from composer.heads import HeadConfig
    from composer.prompts.model import PromptModel

    model = PromptModel(load_base(tiny_bert_dir)).eval()
    gen = torch.Generator().manual_seed(3)
    for i in range(k):
        model.add(f"p{i}", PromptConfig(length=3), HeadConfig(num_labels=3, pooling="mean"))
        with torch.no_grad():
            for p in [*model.prompts[f"p{i}"].parameters(), *model.heads[f"p{i}"].parameters()]:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


@pytest.mark.parametrize("plan", ["sequential", "chunked"])
def test_every_execution_plan_computes_what_one_batched_forward_does(tiny_bert_dir, plan):
    from tests.conftest import WORDS

    model = _ensemble_model(tiny_bert_dir)
    names = [f"p{i}" for i in range(5)]
    texts = [" ".join(WORDS[i : i + 1 + (i * 7) % 13]) for i in range(11)]  # lengths vary: chunks trim padding
    batch = dict(model.base.tokenizer(texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        want = model.logits(names, batch)
        got = model.logits(names, batch, plan, chunk_rows=8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    for early in (False, True):
        a = predict_ensemble(model, names, batch, "majority", scores, early)
        b = predict_ensemble(model, names, batch, "majority", scores, early, plan)
        assert [(r.label, r.early_exit, r.counts) for r in a] == [(r.label, r.early_exit, r.counts) for r in b]
    with pytest.raises(ConfigError, match="plan"):
        model.logits(names, batch, "sideways")


def test_the_plan_chooser_tries_each_plan_then_runs_the_fastest():
    from composer.planner import PlanChooser, bucket

    assert [bucket(n) for n in (1, 8, 9, 32, 33)] == [1, 8, 16, 32, 64]
    chooser = PlanChooser(["batched", "sequential", "chunked"], trials=2, refresh=10)
    cost = {"batched": 6.0, "sequential": 5.0, "chunked": 3.0}
    seen = []
    for _ in range(9):
        plan = chooser.choose("k5-b32")
        seen.append(plan)
        chooser.record("k5-b32", plan, cost[plan])
    assert seen[:6] == ["batched", "batched", "sequential", "sequential", "chunked", "chunked"]
    assert seen[6:] == ["chunked"] * 3 and chooser.chosen() == {"k5-b32": "chunked"}
    assert chooser.choose("k5-b32") == "batched"  # the 10th call re-measures the slowest
    assert chooser.choose("other") == "batched"  # a new shape starts its own trials
