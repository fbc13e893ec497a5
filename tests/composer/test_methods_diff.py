"""Diff pruning: trained with hard-concrete gates and the L0 penalty, projected to its density and stored sparse;
served, a row equals a freshly loaded base whose weights carry the delta, also beside other methods' rows in one
forward; bad indices and another model's shapes are refused."""

from __future__ import annotations

import pytest
import torch

from composer import adapter_artifact as artifacts
from composer.adapter_training import train_st_adapter
from composer.base import load_base
from composer.composition import BatchSplit, Single
from composer.data import Collator, TaskSpec
from composer.diff.modules import DiffConfig, expected_l0, gates
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError, ComposerError, ConfigError
from composer.injection import FAMILIES
from composer.presets import preset
from composer.training import TrainConfig
from tests.composer.test_fusion_training import examples

TASK = TaskSpec("sent", labels=("neg", "pos"))


def _trained(tiny_bert_dir, density: float = 0.02):  # type: ignore[no-untyped-def]
    base = load_base(tiny_bert_dir)
    data = examples(48, seed=7)
    cfg = TrainConfig(learning_rate=1e-2, epochs=3, batch_size=8, patience=0)
    run = train_st_adapter(base, TASK, data, data, preset("diff", density=density, l0_weight=0.5), cfg)
    return base, data, run


def _with_delta(tiny_bert_dir, art):  # type: ignore[no-untyped-def]
    """The oracle: a fresh base whose linears' weights and biases have the delta added."""
    base = load_base(tiny_bert_dir)
    module = {k[len("adapter.") :]: v for k, v in art.tensors.items() if k.startswith("adapter.")}
    linears = dict(base.model.named_modules())
    with torch.no_grad():
        for name in art.config.shapes:
            layer, linear = int(name[1 : name.index("_")]), name[name.index("_") + 1 :]
            path = next(p for p in linears if p.endswith(f"layer.{layer}.{linear.replace('_', '.')}"))
            lin = linears[path]
            lin.weight.view(-1).index_add_(0, module[f"sites.{name}.w_index"], module[f"sites.{name}.w_value"])
            lin.bias.index_add_(0, module[f"sites.{name}.b_index"], module[f"sites.{name}.b_value"])
    return AdaptedEncoder(base).eval()


def test_gates_follow_the_hard_concrete():
    log_alpha = torch.tensor([-10.0, 0.0, float(torch.log(torch.tensor(3.0))), 10.0])
    # the stretched sigmoid's median: sigmoid(log α)·(r − l) + l, clamped to [0, 1]
    torch.testing.assert_close(gates(log_alpha, training=False), torch.tensor([0.0, 0.0, 0.75, 1.0]))
    sampled = gates(log_alpha.expand(1000, 4), training=True)
    assert sampled.min() >= 0 and sampled.max() <= 1 and (sampled[:, 1] == 0).any() and (sampled[:, 1] == 1).any()
    torch.testing.assert_close(expected_l0(torch.tensor([0.0])), torch.sigmoid(torch.tensor([0.0])))  # l = -r


def test_training_projects_to_the_density_and_serves_the_delta_exactly(tiny_bert_dir):
    base, data, run = _trained(tiny_bert_dir)
    art = run.artifact(TASK)
    total = sum(o * i + o for o, i in art.config.shapes.values())
    kept = sum(w + b for w, b in art.config.nnz.values())
    assert 0 < kept <= round(0.02 * total) + 2  # ties at the threshold aside
    assert len(art.config.shapes) == 2 * len(FAMILIES["bert"].linears)  # every linear of both layers
    again = artifacts.from_files(*artifacts.to_files(art))
    model = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(model, again, name="d")
    model.add_adapter("lo", preset("lora", r=2))
    with torch.no_grad():
        for p in model.adapters["lo"].parameters():
            p.add_(0.1)
    batch = {k: v for k, v in Collator(base.tokenizer, TASK)(data[:4]).items() if k != "labels"}
    oracle = _with_delta(tiny_bert_dir, again)
    with torch.no_grad():
        want = oracle(**batch).hidden
        alone = model(**batch, composition=Single("d")).hidden
        mixed = model(**batch, composition=BatchSplit(("d", "lo", None, "d"))).hidden
        lora = model(**batch, composition=Single("lo")).hidden
        bare = model(**batch).hidden
    assert (want - bare).abs().max() > 1e-4  # the delta matters
    torch.testing.assert_close(alone, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[[0, 3]], want[[0, 3]], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], lora[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[2], bare[2], atol=1e-5, rtol=0)


def test_query_key_and_value_share_one_sparse_product_that_follows_the_values(tiny_bert_dir, monkeypatch):
    """A saved diff serves a layer's query, key and value deltas as one stacked product per run of rows
    (`Stacked`) where MKL's product serves (the C++ kernel not loaded), which equals the merged-weights oracle;
    a value changed in place is served at once."""
    import dataclasses

    from composer.diff import modules

    monkeypatch.setattr(modules.KERNEL, "disabled", 1)  # as inside KERNEL.off(), undone after the test

    _, data, run = _trained(tiny_bert_dir)
    art = run.artifact(TASK)
    model = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(model, art, name="d")
    module = model.adapters["d"]
    assert sorted(module.stacked) == module.layers()
    assert all(list(st.sites) == list(FAMILIES["bert"].siblings) for st in module.stacked.values())
    products = []
    delta = modules.Stacked.delta
    monkeypatch.setattr(modules.Stacked, "delta", lambda self: products.append(self) or delta(self))
    batch = {k: v for k, v in Collator(model.base.tokenizer, TASK)(data[:4]).items() if k != "labels"}
    q = "sites.L0_attention_self_query.w_value"
    assert f"adapter.{q}" in art.tensors
    with torch.no_grad():
        model(**batch, composition=Single("d"))
        assert len(products) == len(module.layers())  # one product per layer for its three linears
        products.clear()
        model(**batch, composition=BatchSplit(("d", None, "d", "d")))
        assert len(products) == 2 * len(module.layers())  # one per run of rows: rows 0 and 2-3
        module.get_parameter(q).add_(0.5)  # in place: the stacked delta is rebuilt from the new values
        moved = dataclasses.replace(art, tensors={**art.tensors, f"adapter.{q}": art.tensors[f"adapter.{q}"] + 0.5})
        want = _with_delta(tiny_bert_dir, moved)(**batch).hidden
        got = model(**batch, composition=BatchSplit(("d", None, "d", "d"))).hidden
        before = _with_delta(tiny_bert_dir, art)(**batch).hidden
    assert (want - before).abs().max() > 1e-4
    torch.testing.assert_close(got[[0, 2, 3]], want[[0, 2, 3]], atol=1e-5, rtol=0)


def test_the_l0_penalty_closes_gates(tiny_bert_dir):
    _, _, run = _trained(tiny_bert_dir)
    sites = run.model.adapters[run.name].sites.values()
    start = torch.sigmoid(torch.tensor(5.0 - torch.log(torch.tensor(1.0)).item()))
    mean = torch.cat([expected_l0(s.w_log_alpha).view(-1) for s in sites]).mean()
    assert mean < start  # the penalty pushed the gates' open probability down from its start


def test_bad_diffs_are_refused(tiny_bert_dir):
    _, _, run = _trained(tiny_bert_dir)
    art = run.artifact(TASK)
    name = next(n for n, (w, _) in art.config.nnz.items() if w)
    out, inp = art.config.shapes[name]
    bad = dict(art.tensors)
    index = bad[f"adapter.sites.{name}.w_index"].clone()
    index[0] = out * inp  # one past the end
    bad[f"adapter.sites.{name}.w_index"] = index
    with pytest.raises(ArtifactError, match="out of range"):
        artifacts.from_files(*artifacts.to_files(artifacts.AdapterArtifact(**{**art.__dict__, "tensors": bad})))
    bad = dict(art.tensors)
    bad[f"adapter.sites.{name}.w_index"] = bad[f"adapter.sites.{name}.w_index"][:-1]
    with pytest.raises(ArtifactError, match="nnz says"):
        artifacts.from_files(*artifacts.to_files(artifacts.AdapterArtifact(**{**art.__dict__, "tensors": bad})))
    # another model's shapes: the tiny base with 3 layers has sites this diff lacks, with another width it differs
    import dataclasses

    wrong = dataclasses.replace(art.config, shapes={**art.config.shapes, name: [out + 1, inp]})
    with pytest.raises(ComposerError, match="shapes"):
        artifacts.attach(AdaptedEncoder(load_base(tiny_bert_dir)), dataclasses.replace(art, config=wrong))
    with pytest.raises(ConfigError, match="density"):
        DiffConfig(density=0.0)


def test_a_bias_value_edited_in_place_is_served_at_once(tiny_bert_dir):
    """Each site's cached sparse form is keyed on its bias values as well as its weight values."""
    import dataclasses

    _, data, run = _trained(tiny_bert_dir, density=0.3)  # dense enough to keep bias entries
    art = run.artifact(TASK)
    model = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(model, art, name="d")
    siblings = {n.replace(".", "_") for n in FAMILIES["bert"].siblings}
    with_bias = [n for n, (_, b) in art.config.nnz.items() if b and n[n.index("_") + 1 :] not in siblings]
    assert with_bias, "the trained diff kept no bias entry outside query, key and value"
    b = f"sites.{with_bias[0]}.b_value"
    batch = {k: v for k, v in Collator(model.base.tokenizer, TASK)(data[:4]).items() if k != "labels"}
    moved = dataclasses.replace(art, tensors={**art.tensors, f"adapter.{b}": art.tensors[f"adapter.{b}"] + 0.5})
    with torch.no_grad():
        model(**batch, composition=BatchSplit(("d", None, "d", "d")))  # the sparse forms are built and cached
        model.adapters["d"].get_parameter(b).add_(0.5)
        got = model(**batch, composition=BatchSplit(("d", None, "d", "d"))).hidden
        want = _with_delta(tiny_bert_dir, moved)(**batch).hidden
        before = _with_delta(tiny_bert_dir, art)(**batch).hidden
    assert (want - before).abs().max() > 1e-4
    torch.testing.assert_close(got[[0, 2, 3]], want[[0, 2, 3]], atol=1e-5, rtol=0)
