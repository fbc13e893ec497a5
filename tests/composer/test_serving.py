"""The serving runtime: mixed-adapter batches equal each request alone, LRU eviction, pinning, leases,
and each module's own max_length."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composition import Single
from composer.data import Example
from composer.encoder import AdaptedEncoder
from composer.heads import HeadConfig
from composer.presets import preset
from composer.serving import Runtime, Tier

ST_A = kinds.get("st_a")


def make_artifacts(base_dir, n=4):
    model = AdaptedEncoder(load_base(base_dir))
    arts = []
    for i in range(n):
        model.add_adapter(f"a{i}", preset("seq_bn" if i % 2 else "double_seq_bn", reduction_factor=4))
        model.add_head(f"a{i}", HeadConfig(num_labels=2 + i % 2, pooling="mean"))
        with torch.no_grad():
            for p in model.adapters[f"a{i}"].parameters():
                p.normal_(0, 0.3)
        arts.append(artifacts.extract(model, f"a{i}", head=f"a{i}"))
    return arts


def load(rt, res, module_id, art):
    rt.ensure(res, "tiny", module_id, ST_A, lambda: art)
    rt.release(module_id)


def test_mixed_batch_equals_each_request_alone(tiny_bert_dir):
    arts = make_artifacts(tiny_bert_dir)
    rt = Runtime()
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    for i, art in enumerate(arts):
        load(rt, res, f"id{i}", art)
    texts = ["good movie", "the plot was really boring", "fresh food", "sad actor", "love it", "a film"]
    rows = [(f"id{i % 4}", Example(t)) for i, t in enumerate(texts)]
    mixed = rt.predict(res, rows)
    for (adapter, ex), got in zip(rows, mixed, strict=True):
        (alone,) = rt.predict(res, [(adapter, ex)])
        assert got.logits.shape == alone.logits.shape
        torch.testing.assert_close(got.logits, alone.logits, atol=1e-5, rtol=0)
    # and a freshly built model with that one adapter
    fresh = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(fresh, arts[0], name="id0")
    batch = res.base.tokenizer([texts[0]], return_tensors="pt")
    with torch.no_grad():
        want = fresh(**batch, head="id0", composition=Single("id0")).logits[0]
    torch.testing.assert_close(mixed[0].logits, want, atol=1e-5, rtol=0)


def test_a_gathered_batch_of_one_bottleneck_size_keeps_each_adapters_scaling_and_head(tiny_bert_dir):
    """Adapters of one layout and size gather their own weights per row; each keeps its scaling (1, 2.5 and
    learned) and its head (mean, cls pooling; 2 or 3 labels). Oracle: a fresh model per adapter."""
    model = AdaptedEncoder(load_base(tiny_bert_dir))
    arts = []
    for i, scaling in enumerate([1.0, 2.5, "learned", 1.0]):
        model.add_adapter(f"a{i}", preset("seq_bn", reduction_factor=4, scaling=scaling))
        model.add_head(f"a{i}", HeadConfig(num_labels=2 + i % 2, pooling="cls" if i % 2 else "mean"))
        with torch.no_grad():
            for p in model.adapters[f"a{i}"].parameters():
                p.normal_(0, 0.3)
        arts.append(artifacts.extract(model, f"a{i}", head=f"a{i}"))
    rt = Runtime()
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    for i, art in enumerate(arts):
        load(rt, res, f"id{i}", art)
    texts = ["good movie", "the plot was really boring", "fresh food", "sad actor", "love it", "a film", "ok"]
    rows = [(f"id{[0, 1, 2, 3, 2, 1, 0][i]}", Example(t)) for i, t in enumerate(texts)]
    mixed = rt.predict(res, rows)
    for (adapter, ex), got in zip(rows, mixed, strict=True):
        fresh = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
        artifacts.attach(fresh, arts[int(adapter[2:])], name=adapter)
        with torch.no_grad():
            want = fresh(
                **res.base.tokenizer([ex.text], return_tensors="pt"), head=adapter, composition=Single(adapter)
            )
        torch.testing.assert_close(got.logits, want.logits[0], atol=1e-5, rtol=1e-4)


def test_lru_evicts_by_bytes_but_never_pinned_or_leased_modules(tiny_bert_dir):
    arts = make_artifacts(tiny_bert_dir, n=3)
    one = sum(t.numel() * 4 for t in arts[0].tensors.values())
    rt = Runtime(cache_bytes=int(one * 2.5))
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    load(rt, res, "id0", arts[0])
    rt.pin("id0")
    load(rt, res, "id1", arts[1])
    load(rt, res, "id2", arts[2])
    load(rt, res, "id1", arts[1])  # evicted earlier: a miss, loaded again
    ids = [m["id"] for m in rt.loaded()]
    assert "id0" in ids and "id0" in res.encoder.adapters
    assert rt.stats.evictions >= 1 and rt.stats.misses == 4
    load(rt, res, "id0", arts[0])
    assert rt.stats.hits == 1
    rt.evict("id1")
    assert "id1" not in res.encoder.adapters and "id1" not in res.encoder.heads
    # a leased module survives both the LRU and an explicit eviction, which happens at its release
    rt.ensure(res, "tiny", "id2", ST_A, lambda: arts[2])
    rt.evict("id2")
    rt.predict(res, [("id2", Example("still here"))])
    rt.release("id2")
    assert "id2" not in res.encoder.adapters and "id2" not in [m["id"] for m in rt.loaded()]


def test_serving_truncates_at_the_module_max_length(tiny_bert_dir):
    (art,) = make_artifacts(tiny_bert_dir, n=1)
    rt = Runtime()
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    load(rt, res, "short", dataclasses.replace(art, max_length=6))
    load(rt, res, "long", art)  # no max_length: the base's own limit
    long_text = Example(" ".join(["good"] * 40))
    got = rt.predict(res, [("short", long_text), ("long", long_text)])
    assert rt.cache["short"].max_length == 6 and rt.cache["long"].max_length == res.token_limit
    fresh = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(fresh, art, name="a")
    with torch.no_grad():
        for row, length in ((got[0], 6), (got[1], None)):
            kw = {"truncation": True, "max_length": length} if length else {}
            batch = res.base.tokenizer([long_text.text], return_tensors="pt", **kw)
            want = fresh(**batch, head="a", composition=Single("a")).logits[0]
            torch.testing.assert_close(row.logits, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got[0].logits, got[1].logits, atol=1e-4)


def test_a_cold_module_loads_once_while_other_modules_keep_serving(tiny_bert_dir):
    """A thundering herd: 8 concurrent first requests for one cold adapter load it once, and a request for
    a loaded adapter is answered while that load is still running (the load holds no runtime lock)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    arts = make_artifacts(tiny_bert_dir, n=2)
    rt = Runtime()
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    load(rt, res, "warm", arts[0])
    calls, started, other_done = [], threading.Event(), threading.Event()

    def slow_load():  # type: ignore[no-untyped-def]
        calls.append(1)
        started.set()
        assert other_done.wait(30), "a request for a loaded module waited for another module's load"
        return arts[1]

    def cold(_: int) -> torch.Tensor:
        rt.ensure(res, "tiny", "cold", ST_A, slow_load)
        try:
            return rt.predict(res, [("cold", Example("good movie"))])[0].logits
        finally:
            rt.release("cold")

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cold, i) for i in range(8)]
        assert started.wait(30)
        rt.ensure(res, "tiny", "warm", ST_A, lambda: arts[0])
        warm = rt.predict(res, [("warm", Example("good movie"))])
        rt.release("warm")
        other_done.set()
        outs = [f.result(timeout=60) for f in futures]
    assert len(calls) == 1 and warm[0].logits.shape == (2,)
    assert all(torch.equal(o, outs[0]) for o in outs) and not rt.leases and not rt.loading

    # a failed load is not cached: the next request (or a waiter) loads again
    def broken():  # type: ignore[no-untyped-def]
        raise ValueError("blob store down")

    import pytest

    with pytest.raises(ValueError):
        rt.ensure(res, "tiny", "bad", ST_A, broken)
    assert "bad" not in rt.cache and not rt.leases


def test_an_evicted_module_reloads_from_host_memory_and_an_archived_one_does_not(tiny_bert_dir):
    arts = make_artifacts(tiny_bert_dir, n=3)
    one = sum(t.numel() * 4 for t in arts[0].tensors.values())
    rt = Runtime(cache_bytes=int(one * 1.5), host_bytes=one * 10)  # one resident module at a time
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    fetches: list[str] = []

    def loader(i: int):  # type: ignore[no-untyped-def]
        def fetch():  # type: ignore[no-untyped-def]
            fetches.append(f"id{i}")
            return arts[i]

        return fetch

    def ask(i: int) -> torch.Tensor:
        rt.ensure(res, "tiny", f"id{i}", ST_A, loader(i))
        try:
            return rt.predict(res, [(f"id{i}", Example("good movie"))])[0].logits
        finally:
            rt.release(f"id{i}")

    first = ask(0)
    built = res.encoder.adapters["id0"]
    ask(1)  # evicts id0 from the resident tier
    assert "id0" not in rt.cache and "id0" in rt.host and "id0" not in res.encoder.adapters
    assert torch.equal(ask(0), first)  # back without a fetch, same answer
    assert fetches == ["id0", "id1"] and rt.stats.host_hits == 1
    assert res.encoder.adapters["id0"] is built  # reattached as it was kept, not built again
    rt.evict("id0")  # an archive forgets it in both tiers
    assert "id0" not in rt.cache and "id0" not in rt.host
    assert torch.equal(ask(0), first)
    assert fetches == ["id0", "id1", "id0"] and res.encoder.adapters["id0"] is not built


def test_a_retired_module_loaded_by_a_request_that_read_it_before_the_archive_is_served_then_detached(tiny_bert_dir):
    """The race the HTTP test hits by chance, made certain: the archive (retire) comes between a request's
    registry read and its load. That request is served; the module is not kept."""
    (art,) = make_artifacts(tiny_bert_dir, n=1)
    rt = Runtime()
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    load(rt, res, "kept", art)
    rt.retire("gone")  # archived while nothing had it loaded
    rt.ensure(res, "tiny", "gone", ST_A, lambda: art)  # the request that read "ready" before the archive
    (got,) = rt.predict(res, [("gone", Example("good movie"))])
    (want,) = rt.predict(res, [("kept", Example("good movie"))])
    torch.testing.assert_close(got.logits, want.logits, atol=1e-6, rtol=0)  # served, with the right answer
    rt.release("gone")
    assert "gone" not in rt.cache and "gone" not in res.encoder.adapters and "gone" not in rt.host
    assert "kept" in rt.cache  # an ordinary module stays


def test_lease_loaded_leases_only_what_is_attached_and_never_an_archived_or_doomed_module(tiny_bert_dir):
    """The request path's way without a load: a module and its members already attached are leased (the LRU
    then keeps them, a hit each); anything else (another base, not loaded, archived, evicted while leased) is
    None and leases nothing."""
    arts = make_artifacts(tiny_bert_dir, n=3)
    one = sum(t.numel() * 4 for t in arts[0].tensors.values())
    rt = Runtime(cache_bytes=int(one * 1.5))
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    assert rt.lease_loaded("tiny", "id0") is None and rt.stats.hits == 0
    load(rt, res, "id0", arts[0])
    assert rt.lease_loaded("other-base", "id0") is None
    assert rt.lease_loaded("tiny", "id0", members=["id1"]) is None and not rt.leases
    assert rt.lease_loaded("tiny", "id0") is res and rt.leases["id0"] == 1 and rt.stats.hits == 1
    load(rt, res, "id1", arts[1])  # over budget: the LRU passes over the leased id0 and evicts id1
    assert "id0" in rt.cache and "id1" not in rt.cache
    (got,) = rt.predict(res, [("id0", Example("good movie"))])
    rt.release("id0")
    fresh = Runtime()
    fres = fresh.resident("tiny", lambda: load_base(tiny_bert_dir))
    load(fresh, fres, "id0", arts[0])
    (want,) = fresh.predict(fres, [("id0", Example("good movie"))])
    torch.testing.assert_close(got.logits, want.logits, atol=1e-6, rtol=0)
    load(rt, res, "id2", arts[2])
    rt.ensure(res, "tiny", "id2", ST_A, lambda: arts[2])
    rt.evict("id2")  # doomed: goes at its release
    assert rt.lease_loaded("tiny", "id2") is None and rt.leases["id2"] == 1
    rt.release("id2")
    load(rt, res, "id1", arts[1])
    rt.retire("id1")
    assert rt.lease_loaded("tiny", "id1") is None and "id1" not in rt.leases


def test_a_tier_keeps_its_byte_total_equal_to_the_sum_of_its_entries():
    import random

    tier, rng = Tier(lambda e: e[1]), random.Random(0)
    for step in range(2_000):
        key, op = f"m{rng.randrange(30)}", rng.randrange(5)
        if op <= 1:
            tier[key] = ("art", rng.randrange(1, 1_000), None)
        elif op == 2:
            tier.pop(key, None)
        elif op == 3 and tier:
            tier.popitem(last=bool(step % 2))
        elif key in tier:
            del tier[key]
        assert tier.total == sum(n for _, n, _ in tier.values())
    with pytest.raises(KeyError):
        tier.pop("absent")
