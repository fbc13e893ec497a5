"""No request sees another's state: any interleaving of request kinds on the serving runtime, over two
resident bases and from several threads, gives the outputs of a freshly built single-purpose model.

The runtime runs ST-As, LoRAs, mixed batches of both (gathered and group-and-scatter), fusions (with and
without attention), composition trees (Stack, Average, a fusion inside a Stack) and Parallels of them, single soft prompts (shallow, deep, and prepended to the embedding output) and
prompt ensembles under every voting rule (8+ rows: under whichever execution plan the runtime
measured fastest), with loads, LRU evictions under a small cache, explicit
evictions and archives while a request holds a lease. Each output is compared, atol 1e-5, with an
oracle: a model built from a freshly loaded base that has only ever run that one module.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from composer import kinds, runs
from composer.base import load_base
from composer.composed import predict_parallel, predict_tree
from composer.composition import Average, Fuse, Parallel, Stack, fusions, leaves
from composer.data import Example
from composer.prompts.ensemble import VOTING_RULES
from composer.serving import Runtime
from tests.composer.serving_oracle import ADAPTERS, ENSEMBLE, FUSION, PROMPTS, TREE_LEAVES, Oracle, build_modules
from tests.conftest import WORDS, make_tiny_bert

ATOL = 1e-5
MIXED_ATOL = 2e-4  # rows of different kinds gathered in one batch (see `_mixed`)
# several rows of one module, padded to one length, run GEMMs of other shapes than the oracle's one row. On
# the ill-conditioned LoRA l1 (noise 0.3 on every pair of four linears) CI found a 2-row batch 7.2e-5 off the
# oracle: against a float64 run of l1 the runtime was 2.7e-5 off and the float32 oracle itself 4.5e-5, so it is
# the oracle's float32 error, not state (a leaked state moves logits by 1e-1 and more)
PADDED_ATOL = MIXED_ATOL


def _averages(children):  # type: ignore[no-untyped-def]
    n = len(children)
    weights = st.lists(st.floats(0.2, 3.0), min_size=n, max_size=n).map(tuple)
    return st.one_of(st.just(Average(*children)), weights.map(lambda w: Average(*children, weights=w)))


AVG = st.lists(st.sampled_from(("s0", "s1")), min_size=1, max_size=2).flatmap(_averages)
STACK = st.lists(st.one_of(st.sampled_from(TREE_LEAVES), AVG, st.just(Fuse(FUSION))), min_size=1, max_size=3).map(
    lambda c: Stack(*c)
)
TREE = st.one_of(
    STACK, AVG, st.lists(st.sampled_from(("s0", "s1")), min_size=1, max_size=2).map(lambda c: Stack(*c)).map(Average)
)


def _ids(node, key: str):  # type: ignore[no-untyped-def]
    """The tree over the runtime's module ids (`A:s0`)."""
    if isinstance(node, str):
        return f"{key}:{node}"
    if isinstance(node, Fuse):
        return Fuse(f"{key}:{node.fusion}")
    children = [_ids(c, key) for c in node.children]
    if isinstance(node, Parallel):
        return Parallel(*children)
    return Stack(*children) if isinstance(node, Stack) else Average(*children, weights=node.weights)


TEXT = st.lists(st.sampled_from(WORDS), min_size=1, max_size=7).map(" ".join)
TEXTS = st.lists(TEXT, min_size=1, max_size=4)


class Bases:
    """Built once per session: two tiny bases of different identity, their modules and their oracles."""

    made: dict[str, tuple[Path, dict[str, object], Oracle]] = {}

    @classmethod
    def get(cls, root: Path) -> dict[str, tuple[Path, dict[str, object], Oracle]]:
        if not cls.made:
            for key, seed in (("A", 0), ("B", 1)):
                d = make_tiny_bert(root / key, seed=seed)
                arts = build_modules(d, seed + 10)
                cls.made[key] = (d, arts, Oracle(d, arts))
        return cls.made


class ServingMachine(RuleBasedStateMachine):
    root: Path

    @initialize()
    def start(self) -> None:
        self.bases = Bases.get(self.root)
        one_adapter = sum(t.numel() * 4 for t in self.bases["A"][1]["s0"].tensors.values())  # type: ignore[attr-defined]
        self.rt = Runtime(cache_bytes=one_adapter * 6)  # small: the LRU evicts during the run
        self.res = {k: self.rt.resident(k, lambda d=d: load_base(d)) for k, (d, _, _) in self.bases.items()}
        self.checks = 0

    # -- helpers ------------------------------------------------------------------------------------
    def _ensure(self, key: str, name: str) -> tuple[str, list[str]]:
        arts = self.bases[key][1]
        mid = f"{key}:{name}"
        members = [
            (f"{key}:{m}", kinds.get("st_a"), lambda m=m: arts[m]) for m in (("s0", "s1") if name == FUSION else ())
        ]
        kind = kinds.get(arts[name].kind)  # type: ignore[attr-defined]
        self.rt.ensure(self.res[key], key, mid, kind, lambda: arts[name], members)
        return mid, [m[0] for m in members]

    def _single(self, key: str, name: str, texts: list[str], attention: bool = False) -> None:
        mid, members = self._ensure(key, name)
        try:
            got = self.rt.predict(self.res[key], [(mid, Example(t)) for t in texts], return_attention=attention)
        finally:
            self.rt.release(mid, members)
        for t, row in zip(texts, got, strict=True):
            want, att = self.bases[key][2].logits(name, t)
            atol = ATOL if len(texts) == 1 else PADDED_ATOL
            torch.testing.assert_close(row.logits, want, atol=atol, rtol=1e-4)
            if attention:
                assert row.attention is not None and att is not None and row.attention.keys() == att.keys()
                for k in att:
                    torch.testing.assert_close(row.attention[k], att[k], atol=ATOL, rtol=0)
            else:
                assert row.attention is None
        self.checks += len(texts)

    def _mixed(self, key: str, names: list[str], texts: list[str], atol: float = MIXED_ATOL) -> None:
        leases = [self._ensure(key, n) for n in dict.fromkeys(names)]
        try:
            rows = [(f"{key}:{n}", Example(t)) for n, t in zip(names, texts, strict=False)]
            got = self.rt.predict(self.res[key], rows)
        finally:
            for mid, members in leases:
                self.rt.release(mid, members)
        for (mid, ex), row in zip(rows, got, strict=True):
            want, _ = self.bases[key][2].logits(mid.split(":")[1], ex.text)
            # gathered rows run other kernels (batched matmuls) than a module alone. On these deliberately
            # ill-conditioned modules (noise 0.3 on every LoRA pair), held to a float64 run of the same LoRA,
            # the float32 model alone is off by 1e-5 and a LoRA row beside a bottleneck row by up to 9e-5:
            # reassociation, not state (a leaked composition moves logits by 1e-1 and more)
            torch.testing.assert_close(row.logits, want, atol=atol, rtol=1e-4)
        self.checks += len(rows)

    def _trees(self, key: str, trees: list, heads: list[str], texts: list[str]) -> None:  # type: ignore[type-arg]
        """One tree (or a Parallel of several, each with its head) over leased members, as serving runs it."""
        names = list(dict.fromkeys(n for t in trees for n in leaves(t) + fusions(t)))
        leases = [self._ensure(key, n) for n in names]
        try:
            inputs = [Example(t) for t in texts]
            if len(trees) == 1:
                got = [predict_tree(self.rt, self.res[key], _ids(trees[0], key), f"{key}:{heads[0]}", inputs)]
            else:
                ids = [f"{key}:{h}" for h in heads]
                got = predict_parallel(self.rt, self.res[key], _ids(Parallel(*trees), key), ids, inputs)
        finally:
            for mid, members in leases:
                self.rt.release(mid, members)
        for tree, head, rows in zip(trees, heads, got, strict=True):
            for text, row in zip(texts, rows, strict=True):
                want = self.bases[key][2].tree(tree, head, text)
                torch.testing.assert_close(row.logits, want, atol=ATOL if len(texts) == 1 else PADDED_ATOL, rtol=1e-4)
        self.checks += len(texts) * len(trees)

    def _ensemble(self, key: str, texts: list[str], voting: str, early_exit: bool) -> None:
        arts = self.bases[key][1]
        scores = [arts[p].metrics["accuracy"] for p in ENSEMBLE]  # type: ignore[attr-defined]
        leases = [self._ensure(key, p) for p in ENSEMBLE]
        try:
            ids = [f"{key}:{p}" for p in ENSEMBLE]
            got = self.rt.predict_ensemble(self.res[key], ids, [Example(t) for t in texts], voting, scores, early_exit)
        finally:
            for mid, members in leases:
                self.rt.release(mid, members)
        want = self.bases[key][2].ensemble(texts, voting, scores, early_exit)
        for g, w in zip(got, want, strict=True):
            assert (g.label, g.early_exit, g.counts) == (w.label, w.early_exit, w.counts)
            for a, b in zip(g.per_prompt, w.per_prompt, strict=True):
                assert (a is None) == (b is None)
                if a is not None:
                    assert a[0] == b[0] and abs(a[1] - b[1]) <= ATOL  # type: ignore[index]
        self.checks += len(texts)

    # -- rules --------------------------------------------------------------------------------------
    @rule(key=st.sampled_from("AB"), name=st.sampled_from((*ADAPTERS, FUSION, *PROMPTS)))
    def load(self, key: str, name: str) -> None:
        mid, members = self._ensure(key, name)
        self.rt.release(mid, members)

    @rule(key=st.sampled_from("AB"), name=st.sampled_from(ADAPTERS), texts=TEXTS)
    def predict_adapter(self, key: str, name: str, texts: list[str]) -> None:
        self._single(key, name, texts)

    @rule(key=st.sampled_from("AB"), texts=TEXTS, attention=st.booleans())
    def predict_fusion(self, key: str, texts: list[str], attention: bool) -> None:
        self._single(key, FUSION, texts, attention)

    @rule(
        key=st.sampled_from("AB"),
        names=st.lists(st.sampled_from((*ADAPTERS, *PROMPTS)), min_size=2, max_size=5),
        data=st.data(),
    )
    def mixed_batch(self, key: str, names: list[str], data: st.DataObject) -> None:
        self._mixed(key, names, data.draw(st.lists(TEXT, min_size=len(names), max_size=len(names))))

    @rule(key=st.sampled_from("AB"), tree=TREE, texts=TEXTS, data=st.data())
    def composition_tree(self, key: str, tree, texts: list[str], data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
        head = data.draw(st.sampled_from(leaves(tree) + fusions(tree)))
        self._trees(key, [tree], [head], texts)

    @rule(
        key=st.sampled_from("AB"),
        trees=st.lists(st.one_of(st.sampled_from(TREE_LEAVES), TREE), min_size=2, max_size=3),
        texts=TEXTS,
        data=st.data(),
    )
    def parallel(self, key: str, trees: list, texts: list[str], data: st.DataObject) -> None:  # type: ignore[type-arg]
        heads = [data.draw(st.sampled_from(leaves(t) + fusions(t))) for t in trees]
        self._trees(key, trees, heads, texts)

    @rule(key=st.sampled_from("AB"), name=st.sampled_from(PROMPTS), texts=TEXTS)
    def single_prompt(self, key: str, name: str, texts: list[str]) -> None:
        self._single(key, name, texts)

    @rule(key=st.sampled_from("AB"), texts=TEXTS, voting=st.sampled_from(VOTING_RULES), early_exit=st.booleans())
    def ensemble(self, key: str, texts: list[str], voting: str, early_exit: bool) -> None:
        self._ensemble(key, texts, voting, early_exit and voting == "majority")

    @rule(key=st.sampled_from("AB"), texts=st.lists(TEXT, min_size=8, max_size=12), early_exit=st.booleans())
    def ensemble_many_rows(self, key: str, texts: list[str], early_exit: bool) -> None:
        """8+ rows: the runtime measures batched, sequential and chunked execution and runs the fastest."""
        self._ensemble(key, texts, "majority", early_exit)

    @rule(key=st.sampled_from("AB"), name=st.sampled_from((*ADAPTERS, FUSION, *PROMPTS)))
    def evict(self, key: str, name: str) -> None:
        self.rt.evict(f"{key}:{name}")
        assert f"{key}:{name}" not in self.rt.cache

    @rule(key=st.sampled_from("AB"), name=st.sampled_from((*ADAPTERS, FUSION)), text=TEXT)
    def archive_while_in_use(self, key: str, name: str, text: str) -> None:
        """An archive evicts; a request that holds the module finishes first, with the right answer."""
        mid, members = self._ensure(key, name)
        self.rt.evict(mid)
        try:
            (row,) = self.rt.predict(self.res[key], [(mid, Example(text))])
        finally:
            self.rt.release(mid, members)
        torch.testing.assert_close(row.logits, self.bases[key][2].logits(name, text)[0], atol=ATOL, rtol=0)
        assert mid not in self.rt.cache

    @rule(data=st.data())
    def concurrent(self, data: st.DataObject) -> None:
        """Several request kinds at once, from threads, on both bases."""
        jobs = []
        for _ in range(data.draw(st.integers(2, 5))):
            key, op = (
                data.draw(st.sampled_from("AB")),
                data.draw(st.sampled_from(["adapter", "fusion", "prompt", "ens", "mixed", "tree"])),
            )
            texts = data.draw(TEXTS)
            if op == "adapter":
                jobs.append((self._single, (key, data.draw(st.sampled_from(ADAPTERS)), texts)))
            elif op == "fusion":
                jobs.append((self._single, (key, FUSION, texts, data.draw(st.booleans()))))
            elif op == "prompt":
                jobs.append((self._single, (key, data.draw(st.sampled_from(PROMPTS)), texts)))
            elif op == "tree":
                tree = data.draw(TREE)
                jobs.append(
                    (self._trees, (key, [tree], [data.draw(st.sampled_from(leaves(tree) + fusions(tree)))], texts))
                )
            elif op == "ens":
                jobs.append((self._ensemble, (key, texts, data.draw(st.sampled_from(VOTING_RULES)), False)))
            else:
                names = data.draw(st.lists(st.sampled_from(ADAPTERS), min_size=len(texts), max_size=len(texts)))
                jobs.append((self._mixed, (key, names, texts)))
        with ThreadPoolExecutor(len(jobs)) as pool:
            for f in [pool.submit(fn, *args) for fn, args in jobs]:
                f.result()

    @invariant()
    def nothing_left_on_the_layers(self) -> None:
        for res in getattr(self, "res", {}).values():
            assert res.encoder.router.scope is None
        if hasattr(self, "rt"):
            assert not self.rt.leases  # every request gave its lease back


@pytest.fixture(scope="module")
def machine_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stateless")


def test_any_interleaving_equals_fresh_single_purpose_models(machine_root: Path) -> None:
    ServingMachine.root = machine_root
    run = ServingMachine.TestCase
    run.settings = settings(
        max_examples=25,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    run().runTest()


def test_the_reported_sequence(machine_root: Path) -> None:
    """The issue's reproduction: a prompt, then an ST-A, then a mixed batch of two adapters, then the prompt
    again. Before per-forward composition the second answer drifted and the third raised a shape error."""
    ServingMachine.root = machine_root
    m = ServingMachine()
    m.start()
    m._single("A", "p0", ["good movie", "a really boring plot"])
    m._single("A", "s0", ["good movie"])
    m._single("A", "p0", ["good movie", "a really boring plot"])
    m._mixed("A", ["s0", "s1", "s0", "s1"], ["good", "bad film", "the plot", "love it"])
    m._single("A", "hub", ["good movie", "a really boring plot"])
    m._ensemble("A", ["good movie", "a really boring plot"], "majority", True)
    assert m.checks == 13


def test_a_padded_batch_of_the_ill_conditioned_lora(machine_root: Path) -> None:
    """CI's case: two rows of LoRA l1, padded to one length, are held to the float32 oracle within its own
    float32 error (see PADDED_ATOL); one row alone runs the oracle's shapes and is held to ATOL."""
    ServingMachine.root = machine_root
    m = ServingMachine()
    m.start()
    m._single("A", "l1", ["good good good", "hate food"])
    m._single("A", "l1", ["hate food"])
    assert m.checks == 3


@pytest.mark.parametrize("max_runs", [runs.MAX_RUNS, 0, 100], ids=["default", "gathered", "runs"])
def test_one_row_of_every_kind_in_one_forward(machine_root: Path, max_runs: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Bottleneck, Compacter++, LoRA (two), AdaLoRA, (IA)³, BitFit and diff rows beside shallow, P-tuning,
    AdapterHub (embedding output) and deep prompts and prefixes of both position conventions: one forward, each
    row its own single-purpose model's answer: with each method's rows on their own slices of the batch (few
    runs of rows), or gathered per row (many), as `composer.runs.MAX_RUNS` decides."""
    monkeypatch.setattr(runs, "MAX_RUNS", max_runs)
    ServingMachine.root = machine_root
    m = ServingMachine()
    m.start()
    names = [*ADAPTERS, *PROMPTS]
    texts = [" ".join(WORDS[i % len(WORDS)] for i in range(j % 5 + 1, j % 5 + 2 + j % 4)) for j in range(len(names))]
    m._mixed("A", names, texts, atol=ATOL)  # the 1e-5 (measured: at most 6e-7 here)
    m._mixed("B", names[::-1], texts, atol=ATOL)
    m._mixed("A", names + names[::-1], texts + texts, atol=ATOL)  # each module's rows apart: ordered by module
    for _ in range(4):  # the runtime tries both execution plans (one forward, one per layout) on this shape
        m._mixed("B", names, texts, atol=ATOL)
    assert m.checks == 8 * len(names)
    assert len(next(iter(m.rt.row_plans.values())).chosen()) >= 1
