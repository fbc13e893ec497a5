"""Stack and Average over bottleneck adapters equal AdapterHub `adapters` 1.3.0 on the same weights
(scripts/parity/make_compositions.py), with its Average fixed to the weighted sum; bad trees are refused
naming the node."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composed import parallel_hidden
from composer.composition import Average, BatchSplit, Fuse, Parallel, Single, Stack, check_tree
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.fusion import artifacts as fusion_artifacts
from composer.presets import preset
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"
NAMES = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn"]
EXPECTED = load_file(PARITY / "compositions" / "expected.safetensors")
CASES = {
    "stack/seq_bn+double_seq_bn": Stack("seq_bn", "double_seq_bn"),
    "stack/par_bn+seq_bn": Stack("par_bn", "seq_bn"),
    "stack/seq_bn+scaled_par_bn+double_seq_bn": Stack("seq_bn", "scaled_par_bn", "double_seq_bn"),
    "average/seq_bn+par_bn@0.7,0.3": Average("seq_bn", "par_bn", weights=(0.7, 0.3)),
    "average/par_bn+scaled_par_bn": Average("par_bn", "scaled_par_bn"),
    "average/seq_bn+seq_bn_copy": Average("seq_bn", "seq_bn_copy"),
    "stack/seq_bn+average(par_bn,scaled_par_bn)": Stack("seq_bn", Average("par_bn", "scaled_par_bn")),
    "average/stack(seq_bn,par_bn)+scaled_par_bn@1,3": Average(
        Stack("seq_bn", "par_bn"), "scaled_par_bn", weights=(1.0, 3.0)
    ),
    # a registered fusion (fixtures/parity/fusions/seq_bn, here "f") inside a Stack
    "stack/seq_bn+fuse(seq_bn_f*)": Stack("seq_bn", Fuse("f")),
    "stack/par_bn+fuse(seq_bn_f*)": Stack("par_bn", Fuse("f")),
    "stack/fuse(seq_bn_f*)+seq_bn": Stack(Fuse("f"), "seq_bn"),
    "stack/seq_bn+fuse(seq_bn_f*)+scaled_par_bn": Stack("seq_bn", Fuse("f"), "scaled_par_bn"),
}


@pytest.fixture(scope="module")
def model() -> AdaptedEncoder:
    m = AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu")).eval()
    for name in NAMES:
        artifacts.attach(m, kinds.load_dir(PARITY / "adapters" / name), name=name)
    artifacts.attach(m, kinds.load_dir(PARITY / "adapters" / "seq_bn"), name="seq_bn_copy")
    artifacts.attach(m, kinds.load_dir(PARITY / "adapters" / "seq_bn_b"), name="seq_bn_b")
    fusion = fusion_artifacts.import_adapterhub_fusion(PARITY / "fusions" / "seq_bn" / "fusion")
    for member in fusion.members:
        artifacts.attach(m, kinds.load_dir(PARITY / "fusions" / "seq_bn" / member))
    assert fusion_artifacts.attach(m, fusion, name="f") == "f"
    return m


@pytest.mark.parametrize("case", list(CASES))
def test_a_composition_matches_adapterhub(model, case):
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        hidden = model(**x, composition=CASES[case]).hidden
        alone = model(**x, composition=Single("seq_bn")).hidden
    want = EXPECTED[case]
    assert (want - EXPECTED["single/seq_bn"]).abs().max() > 1e-2 or case.endswith("seq_bn_copy")
    torch.testing.assert_close(hidden, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, EXPECTED["single/seq_bn"], atol=1e-5, rtol=0)


def test_parallel_and_batch_split_match_adapterhub_and_each_branch_alone(model):
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        branches = parallel_hidden(model, x, Parallel("seq_bn", "seq_bn_b"))
        alone = [model(**x, composition=Single(n)).hidden for n in ("seq_bn", "seq_bn_b")]
        rows = BatchSplit(("seq_bn", Stack("par_bn", "seq_bn"), Stack("par_bn", "seq_bn")))
        split = model(**x, composition=rows).hidden
        stacked = model(**x, composition=Stack("par_bn", "seq_bn")).hidden
    torch.testing.assert_close(torch.cat(branches), EXPECTED["parallel/seq_bn|seq_bn_b"], atol=1e-5, rtol=0)
    for got, want in zip(branches, alone, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (branches[0] - branches[1]).abs().max() > 1e-2
    torch.testing.assert_close(split, EXPECTED["batch_split/seq_bn|stack(par_bn,seq_bn)@1,2"], atol=1e-5, rtol=0)
    torch.testing.assert_close(split[1:], stacked[1:], atol=1e-6, rtol=0)
    # a tree of any shape per row, and rows without an adapter, each exactly as alone
    mixed = (Average("par_bn", "scaled_par_bn", weights=(2.0, 1.0)), None, "double_seq_bn")
    with torch.no_grad():
        got = model(**x, composition=BatchSplit(mixed)).hidden
        for i, row in enumerate(mixed):
            comp = None if row is None else (Single(row) if isinstance(row, str) else row)
            want = model(**{k: v[i : i + 1] for k, v in x.items()}, composition=comp).hidden[0]
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


def test_the_references_average_divides_by_the_member_count_and_ours_does_not(model):
    """Average(a, a) is a: adapters 1.3.0 gives something else (its mean of weighted outputs)."""
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        ours = model(**x, composition=Average("seq_bn", "seq_bn_copy")).hidden
    torch.testing.assert_close(ours, EXPECTED["single/seq_bn"], atol=1e-5, rtol=0)
    for key in EXPECTED:
        if key.startswith("average/"):
            shipped = EXPECTED[key.replace("average", "average_as_shipped", 1)]
            assert (shipped - EXPECTED[key]).abs().max() > 1e-2, key


def _deep(levels: int):  # type: ignore[no-untyped-def]
    node = "x"
    for i in range(levels):
        node = Stack("a", node) if i % 2 else Average("a", node)
    return node


@pytest.mark.parametrize(
    ("tree", "words"),
    [
        (Stack(), "stack: empty"),
        (Average("a"), None),
        (Average("a", "b", weights=(1.0,)), "average: 1 weights for 2 members"),
        (Average("a", "b", weights=(1.0, -1.0)), "sum to 0"),
        (Stack("a", Stack("b")), "stack[1]: Stack cannot be nested in Stack"),
        (
            Average("a", Stack("b", Average("c", Average("d", "e")))),
            "average[1].stack[1].average[1]: Average cannot be nested in Average",
        ),
        (Stack("a", ""), "stack[1]: a member is a module name"),
        (Stack("a", Fuse("")), "stack[1]: a member is a module name"),
        (Average("a", Fuse("f")), "average[1]: Fuse cannot be nested in Average"),
        (Parallel("a", Fuse("f")), "parallel[1]: Fuse cannot be nested in Parallel"),
        (_deep(9), "deeper than 8"),
        (Stack("a", Parallel("b", "c")), "stack[1]: Parallel cannot be nested in Stack"),
        (Parallel("a", Parallel("b")), "parallel[1]: Parallel cannot be nested in Parallel"),
    ],
)
def test_an_invalid_tree_is_refused_naming_the_node(tree, words):
    if words is None:
        check_tree(tree)  # a one-member Average is allowed, as in adapters 1.3.0
        return
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        check_tree(tree)


def test_trees_refuse_unknown_members_loras_and_averages_of_different_sites(model, tiny_bert_dir):
    x = load_file(PARITY / "inputs.safetensors")
    with pytest.raises(ConfigError, match="unknown adapters"):
        model(**x, composition=Stack("seq_bn", "nope"))
    with pytest.raises(ConfigError, match="different sites"):
        model(**x, composition=Average("seq_bn", "double_seq_bn"))
    m = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    m.add_adapter("a", preset("seq_bn", reduction_factor=4))
    m.add_adapter("l", preset("lora"))
    ids = {"input_ids": torch.tensor([[2, 5, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with pytest.raises(ConfigError, match="bottleneck"):
        m(**ids, composition=Stack("a", "l"))
