"""AdaLoRA: PEFT's saved adapter imports to its logits, the budget schedule and allocation follow PEFT's
RankAllocator, training ends at the target budget with the orthogonality penalty in the loss, and the pruned
artifact serves exactly what the masked model computed, beside other adapters in one mixed batch."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.adalora.allocator import RankAllocator, TrainingHooks
from composer.adalora.modules import AdaLoraConfig
from composer.adapter_training import train_st_adapter
from composer.base import load_base
from composer.composition import BatchSplit, Single
from composer.data import Collator, TaskSpec
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError, ConfigError
from composer.presets import preset
from composer.training import TrainConfig
from tests.composer.parity import PARITY, PEFT_BASE, files_in
from tests.composer.test_fusion_training import examples

FIXTURE = PARITY / "methods" / "adalora_peft"
TASK = TaskSpec("sent", labels=("neg", "pos"))


def _files() -> dict[str, bytes]:
    return files_in(FIXTURE)


def test_peft_adalora_imports_pruned_and_gives_peft_logits():
    ref = load_file(PARITY / "methods" / "expected.safetensors")
    art = kinds.load_files(_files(), PEFT_BASE)
    assert art.kind == "adalora"
    assert sum(art.config.rank_pattern.values()) == 2 * 6  # target_r per linear, over 6 linears
    assert art.config.rank_pattern["L1_intermediate_dense"] == 0  # a linear that kept nothing
    model = AdaptedEncoder(load_base(PEFT_BASE, with_tokenizer=False, device="cpu")).eval()
    name = artifacts.attach(model, art)
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        assert (model(**x, composition=Single(name)).hidden - model(**x).hidden).abs().max() > 0.1
        logits = model(**x, head=name, composition=Single(name)).logits
    torch.testing.assert_close(logits, ref["adalora_peft"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref["adalora_peft_trained"], atol=1e-5, rtol=0)  # as PEFT trained it


def test_pruned_tensors_without_their_rank_pattern_are_refused():
    files = _files()
    files["adapter_config.json"] = files["adapter_config.json"].replace(b'"rank_pattern": {', b'"rank_pattern_": {')
    with pytest.raises(ConfigError, match="rank_pattern"):
        kinds.load_files(files, PEFT_BASE)


def _module(init_r: int = 4, target_r: int = 2, **kw):  # type: ignore[no-untyped-def]
    model = AdaptedEncoder(load_base(PEFT_BASE, with_tokenizer=False, device="cpu"))
    return model, model.add_adapter("a", AdaLoraConfig(init_r=init_r, target_r=target_r, **kw))


def test_budget_schedule_is_peft_s_cubic():
    _, module = _module(init_r=6, target_r=2, tinit=2, tfinal=4, deltaT=2)
    alloc = RankAllocator(module)
    assert (alloc.init_bgt, alloc.target_bgt) == (24, 8)  # 4 linears (query and value, 2 layers)
    total = 12
    # PEFT: budget = int((init - target) * (1 - (step - tinit) / (total - tfinal - tinit))**3 + target)
    want = {
        0: (24, False),
        2: (24, False),
        3: (int(16 * (1 - 1 / 6) ** 3 + 8), False),
        4: (int(16 * (1 - 2 / 6) ** 3 + 8), True),
    }
    want.update({8: (8, True), 9: (8, True)})
    for step, expected in want.items():
        assert alloc.budget(step, total) == expected, step


def test_allocation_keeps_the_most_important_triplets():
    _, module = _module(init_r=3, target_r=1)
    alloc = RankAllocator(module)
    gen = torch.Generator().manual_seed(0)
    for n in alloc.names:  # importance = EMA sensitivity x uncertainty, set directly
        for p in ("lora_A", "lora_E", "lora_B"):
            shape = getattr(module.sites[n], p).shape
            alloc.ipt[f"{n}.{p}"] = torch.rand(shape, generator=gen)
            alloc.unc[f"{n}.{p}"] = torch.rand(shape, generator=gen)
    with torch.no_grad():
        for site in module.sites.values():
            site.lora_E.fill_(1.0)
    scores = torch.cat([alloc.scores()[n] for n in alloc.names])
    alloc.mask_to_budget(4)
    kept = torch.cat([alloc.mask[n] for n in alloc.names])
    assert int(kept.sum()) == 4 and set(scores[kept].tolist()) == set(scores.topk(4).values.tolist())
    e = torch.cat([module.sites[n].lora_E.view(-1) for n in alloc.names])
    assert torch.equal(e == 0, ~kept)


def test_tinit_and_tfinal_must_leave_steps():
    _, module = _module(tinit=5, tfinal=5)
    with pytest.raises(ConfigError, match="tinit \\+ tfinal"):
        TrainingHooks(module).check(10)


def test_training_reaches_the_target_budget_and_the_artifact_serves_what_was_trained(tiny_bert_dir):
    base = load_base(tiny_bert_dir)
    data = examples(48, seed=5)
    cfg = TrainConfig(learning_rate=2e-2, epochs=4, batch_size=8, patience=0)
    adalora = preset("adalora", init_r=4, target_r=2, tinit=2, tfinal=6, deltaT=2)
    run = train_st_adapter(base, TASK, data, data, adalora, cfg)
    assert run.hooks is not None and run.hooks.penalty().item() > 0
    art = run.artifact(TASK)
    sites = len(run.model.adapters[run.name].sites)
    assert sum(art.config.rank_pattern.values()) == 2 * sites  # the target budget: target_r per linear on average
    assert all(v.shape[0] <= 4 for k, v in art.tensors.items() if k.endswith("lora_A"))
    # the pruned artifact answers what the trained (masked) model answers, and serves beside a LoRA in one batch
    again = artifacts.from_files(*artifacts.to_files(art))
    model = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(model, again, name="ada")
    model.add_adapter("lo", preset("lora", r=2))
    with torch.no_grad():
        for p in model.adapters["lo"].parameters():
            p.add_(0.1)
    batch = {k: v for k, v in Collator(base.tokenizer, TASK)(data[:4]).items() if k != "labels"}
    run.hooks.allocator.apply_mask()
    run.model.eval()
    with torch.no_grad():
        trained = run.model(**batch, composition=Single(run.name)).hidden
        alone = model(**batch, composition=Single("ada")).hidden
        mixed = model(**batch, composition=BatchSplit(("ada", "lo", "ada", "lo"))).hidden
        lora = model(**batch, composition=Single("lo")).hidden
    torch.testing.assert_close(alone, trained, atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[0::2], alone[0::2], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1::2], lora[1::2], atol=1e-5, rtol=0)


def test_bad_rank_pattern_in_our_format_is_refused():
    with pytest.raises(ConfigError, match="rank_pattern"):
        AdaLoraConfig(init_r=4, target_r=2, rank_pattern={"L0_attention_self_query": 5})
    art = kinds.load_files(_files(), PEFT_BASE)
    art.tensors["adapter.sites.L0_attention_self_query.lora_A"] = torch.zeros(1, 32)
    model = AdaptedEncoder(load_base(PEFT_BASE, with_tokenizer=False, device="cpu"))
    with pytest.raises((ArtifactError, ConfigError, RuntimeError)):
        artifacts.attach(model, art)


def test_a_linear_that_kept_nothing_anywhere_exports_empty_at_its_own_widths():
    """PEFT's fixture keeps nothing at layer 1's intermediate.dense; with layer 0's dropped as well, no site says
    the FFN's widths. The export shapes the empty tensors by the base's (lora_A [0, in], lora_B [out, 0]), and
    imports back to the same logits."""
    from safetensors.torch import load as load_bytes

    from composer.exporting import Target

    art = kinds.load_files(_files(), PEFT_BASE)
    inner = load_base(PEFT_BASE, with_tokenizer=False, device="cpu").model.config.intermediate_size
    drop = [k for k in art.tensors if "_intermediate_dense." in k]
    assert drop, "the fixture adapts intermediate.dense"
    for k in drop:
        del art.tensors[k]
    pattern = {**art.config.rank_pattern, "L0_intermediate_dense": 0, "L1_intermediate_dense": 0}
    art.config = AdaLoraConfig.from_dict({**art.config.to_dict(), "rank_pattern": pattern})
    target = Target("peft-base", "bert", 2, 4, inner)
    files = kinds.get("adalora").export(art, "peft", target)
    saved = load_bytes(files["adapter_model.safetensors"])
    up = {k: v.shape for k, v in saved.items() if "intermediate.dense.lora_" in k}
    assert up and all(s in ((0, 32), (0, 1), (inner, 0)) for s in up.values()), up
    back = kinds.load_files(files, PEFT_BASE)
    x = load_file(PARITY / "inputs.safetensors")
    logits = []
    for a in (art, back):
        model = AdaptedEncoder(load_base(PEFT_BASE, with_tokenizer=False, device="cpu")).eval()
        name = artifacts.attach(model, a)
        with torch.no_grad():
            logits.append(model(**x, head=name, composition=Single(name)).logits)
    torch.testing.assert_close(logits[1], logits[0], atol=1e-6, rtol=0)
