"""AdapterDrop's shared layers: a Parallel whose branches all leave out the lower layers runs them once over
the B rows, and every branch still equals the branch alone (1e-5), in every family; a branch that adapts a
lower layer moves the replication down to it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, BertConfig, DistilBertConfig, RobertaConfig

from composer.base import load_base
from composer.composed import parallel_hidden
from composer.composition import Average, Fuse, Parallel, Single, Stack, fusions, leaves
from composer.encoder import AdaptedEncoder
from composer.fusion.modules import FusionConfig
from composer.presets import config_from, preset
from composer.replication import layers_of, shared_depth

COMMON = dict(vocab_size=50, max_position_embeddings=40)
CONFIGS = {
    "bert": BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48, **COMMON),
    "roberta": RobertaConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48, **COMMON
    ),
    "distilbert": DistilBertConfig(dim=32, n_layers=4, n_heads=4, hidden_dim=48, **COMMON),
}
ADAPTERS = {
    "s0": preset("seq_bn", reduction_factor=4, leave_out=[0, 1]),
    "s1": preset("seq_bn", reduction_factor=4, leave_out=[0, 1, 2]),
    "p0": preset("par_bn", reduction_factor=4, leave_out=[0, 1]),
    "d0": preset("double_seq_bn", reduction_factor=4, leave_out=[0, 1]),
    "low": preset("seq_bn", reduction_factor=4, leave_out=[0]),
    "s2": preset("seq_bn", reduction_factor=4, leave_out=[0, 1]),
    "low2": preset("seq_bn", reduction_factor=4, leave_out=[0]),
    "l0": config_from("lora", {"r": 4, "layers": [2, 3]}),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    AutoModel.from_config(CONFIGS[request.param]).save_pretrained(d)
    m = AdaptedEncoder(load_base(d, with_tokenizer=False, device="cpu")).eval()
    for name, cfg in ADAPTERS.items():
        m.add_adapter(name, cfg)
        with torch.no_grad():
            for q in m.adapters[name].parameters():
                q.normal_(0, 0.3)
    m.add_fusion("f_up", ["s0", "s2"], FusionConfig(dropout=0.0))  # members from layer 2 up
    m.add_fusion("f_low", ["low", "low2"], FusionConfig(dropout=0.0))  # a member from layer 1 up
    return m


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[3, 7, 9, 11, 4, 2], [3, 8, 12, 2, 1, 1], [3, 5, 2, 1, 1, 1]])
    return {"input_ids": ids, "attention_mask": (ids != 1).long()}


def _rows_seen(model: AdaptedEncoder) -> tuple[list[int], list]:  # type: ignore[type-arg]
    """Per layer, the rows of the hidden states it was given (recorded by a forward pre-hook)."""
    seen: list[int] = []

    def record(_m, args, kwargs):  # type: ignore[no-untyped-def]
        hidden = args[0] if args else next(iter(kwargs.values()))
        seen.append(hidden.shape[0])

    handles = [
        lay.register_forward_pre_hook(record, with_kwargs=True) for lay in layers_of(model.encoder, model.base.family)
    ]
    return seen, handles


@pytest.mark.parametrize(
    ("branches", "depth"),
    [
        (("s0", "p0", "d0"), 2),
        (("s0", "s1"), 2),
        (("s1", "l0"), 2),
        (("s1", Stack("s0", "p0"), Average("s0", "p0", weights=(2.0, 1.0))), 2),
        (("s0", "low"), 1),
        (("s1", "s1"), 3),
        (("s1", Stack("s1", Fuse("f_up"))), 2),  # a fusion shares what its members leave out
        ((Stack("s1", Fuse("f_low")), "s0"), 1),
    ],
)
def test_parallel_shares_the_left_out_layers_and_each_branch_is_the_branch_alone(model, branches, depth):  # type: ignore[no-untyped-def]
    batch = _batch()
    hooks_before = [len(lay._forward_pre_hooks) for lay in layers_of(model.encoder, model.base.family)]
    names = [*leaves(Parallel(*branches)), *(m for f in fusions(Parallel(*branches)) for m in model.fusions[f].members)]
    assert shared_depth([model.adapters[n] for n in names], 4) == depth
    seen, handles = _rows_seen(model)
    try:
        with torch.no_grad():
            got = parallel_hidden(model, batch, Parallel(*branches))
    finally:
        for h in handles:
            h.remove()
    n, b = len(branches), batch["input_ids"].shape[0]
    assert seen == [b] * depth + [n * b] * (4 - depth)  # the shared layers ran once over the B rows
    for branch, hidden in zip(branches, got, strict=True):
        comp = Single(branch) if isinstance(branch, str) else branch
        with torch.no_grad():
            alone = model(**batch, composition=comp).hidden
        torch.testing.assert_close(hidden, alone, atol=1e-5, rtol=0)
    assert [len(lay._forward_pre_hooks) for lay in layers_of(model.encoder, model.base.family)] == hooks_before


def test_a_full_depth_parallel_still_matches(model):  # type: ignore[no-untyped-def]
    model.add_adapter("full", preset("seq_bn", reduction_factor=4)) if "full" not in model.adapters else None
    batch = _batch()
    with torch.no_grad():
        got = parallel_hidden(model, batch, Parallel("full", "s0"))
        for name, hidden in zip(("full", "s0"), got, strict=True):
            torch.testing.assert_close(hidden, model(**batch, composition=Single(name)).hidden, atol=1e-5, rtol=0)
