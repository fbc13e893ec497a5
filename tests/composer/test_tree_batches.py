"""Property: a batch whose rows each carry a random tree (Stack/Average over random members and a fusion, or a single
adapter, or none) gives every row what the same tree gives it alone, to 1e-5; a Parallel gives each branch
what it gives alone. Trees, members, weights and rows are drawn by hypothesis."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.base import load_base
from composer.composed import parallel_hidden
from composer.composition import Average, BatchSplit, Fuse, Parallel, Single, Stack
from composer.encoder import AdaptedEncoder
from composer.fusion.modules import FusionConfig
from composer.presets import preset

# members of three layouts: output-only sequential, output-only parallel (both average together), and
# sequential at both sites (stacks only: an Average's members share their sites)
OUT_ONLY = ["s0", "s1", "p0"]
BOTH = ["d0"]


@pytest.fixture(scope="module")
def model(tiny_bert_dir):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    m = AdaptedEncoder(load_base(tiny_bert_dir, device="cpu")).eval()
    for name, p in (("s0", "seq_bn"), ("s1", "seq_bn"), ("p0", "par_bn"), ("d0", "double_seq_bn")):
        m.add_adapter(name, preset(p, reduction_factor=4))
        with torch.no_grad():
            for q in m.adapters[name].parameters():
                q.normal_(0, 0.3)
    m.add_fusion("f", ["s0", "s1"], FusionConfig(dropout=0.0))  # a fusion over two members, in Stacks
    with torch.no_grad():
        for q in m.fusions["f"].parameters():  # around its initialisation (V the identity), as a trained fusion
            q.add_(torch.randn_like(q) * 0.05)
    return m


def averages(children):  # type: ignore[no-untyped-def]
    weights = st.lists(st.floats(0.1, 3.0), min_size=len(children), max_size=len(children))
    return st.one_of(st.just(Average(*children)), weights.map(lambda w: Average(*children, weights=tuple(w))))


leaf = st.sampled_from(OUT_ONLY + BOTH)
avg_of_leaves = st.lists(st.sampled_from(OUT_ONLY), min_size=1, max_size=3).flatmap(averages)
stack_of = st.lists(st.one_of(leaf, avg_of_leaves, st.just(Fuse("f"))), min_size=1, max_size=3).map(lambda c: Stack(*c))
avg_of_stacks = st.lists(
    st.lists(st.sampled_from(OUT_ONLY), min_size=1, max_size=2).map(lambda c: Stack(*c)), min_size=1, max_size=2
).flatmap(averages)
row = st.one_of(st.none(), leaf, stack_of, avg_of_leaves, avg_of_stacks)

WORDS = torch.arange(5, 40)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(rows=st.lists(row, min_size=1, max_size=6), lengths=st.lists(st.integers(2, 9), min_size=6, max_size=6))
def test_every_row_of_a_tree_batch_is_its_tree_alone(model, rows, lengths):  # type: ignore[no-untyped-def]
    n = len(rows)
    t = max(lengths[:n])
    ids = torch.zeros(n, t, dtype=torch.long)
    mask = torch.zeros(n, t, dtype=torch.long)
    for i in range(n):
        ids[i, : lengths[i]] = WORDS[(torch.arange(lengths[i]) * (i + 3)) % len(WORDS)]
        mask[i, : lengths[i]] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        together = model(**batch, composition=BatchSplit(tuple(rows))).hidden
        for i, tree in enumerate(rows):
            comp = None if tree is None else Single(tree) if isinstance(tree, str) else tree
            k = lengths[i]
            one = {key: v[i : i + 1, :k] for key, v in batch.items()}
            alone = model(**one, composition=comp).hidden[0]
            torch.testing.assert_close(together[i, :k], alone, atol=1e-5, rtol=0)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(branches=st.lists(st.one_of(leaf, stack_of, avg_of_leaves), min_size=1, max_size=4))
def test_every_branch_of_a_parallel_is_the_branch_alone(model, branches):  # type: ignore[no-untyped-def]
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 13, 5, 3, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        got = parallel_hidden(model, batch, Parallel(*branches))
        for branch, hidden in zip(branches, got, strict=True):
            comp = Single(branch) if isinstance(branch, str) else branch
            torch.testing.assert_close(hidden, model(**batch, composition=comp).hidden, atol=1e-5, rtol=0)
