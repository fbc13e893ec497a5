"""The serving runtime: mixed-adapter batches equal each request alone, LRU eviction, pinning."""

from __future__ import annotations

import torch

from composer import artifacts
from composer.base import load_base
from composer.composition import Single
from composer.config import preset
from composer.data import Collator, Example, TaskSpec
from composer.heads import HeadConfig
from composer.model import AdaptedEncoder
from composer.serving import Runtime

TASKS = [TaskSpec("a", labels=("neg", "pos")), TaskSpec("b", labels=("x", "y", "z"))]


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


def test_mixed_batch_equals_each_request_alone(tiny_bert_dir):
    arts = make_artifacts(tiny_bert_dir)
    rt = Runtime()
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    for i, art in enumerate(arts):
        rt.ensure_adapter(res, "tiny", f"id{i}", lambda art=art: art)
    texts = ["good movie", "the plot was really boring", "fresh food", "sad actor", "love it", "a film"]
    rows = [(f"id{i % 4}", Example(t)) for i, t in enumerate(texts)]
    mixed = rt.predict_mixed(res, rows)
    for (adapter, ex), got in zip(rows, mixed, strict=True):
        task = TASKS[int(adapter[2:]) % 2]
        alone, _ = rt.predict(res, adapter, task, [ex])
        assert got.shape == alone[0].shape
        torch.testing.assert_close(got, alone[0], atol=1e-5, rtol=0)
    # and the plain model: each adapter activated by itself
    model = res.encoder
    batch = {k: v for k, v in Collator(res.base.tokenizer, TASKS[0])([rows[0][1]]).items() if k != "labels"}
    model.activate(Single("id0"))
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, head="id0").logits[0], mixed[0], atol=1e-5, rtol=0)


def test_lru_evicts_by_bytes_but_never_pinned_modules(tiny_bert_dir):
    arts = make_artifacts(tiny_bert_dir, n=3)
    one = sum(t.numel() * 4 for t in arts[0].tensors.values())
    rt = Runtime(cache_bytes=int(one * 2.5))
    res = rt.resident("tiny", lambda: load_base(tiny_bert_dir))
    rt.ensure_adapter(res, "tiny", "id0", lambda: arts[0])
    rt.pin("id0")
    rt.ensure_adapter(res, "tiny", "id1", lambda: arts[1])
    rt.ensure_adapter(res, "tiny", "id2", lambda: arts[2])
    rt.ensure_adapter(res, "tiny", "id1", lambda: arts[1])  # evicted earlier: a miss, loaded again
    ids = [m["id"] for m in rt.loaded()]
    assert "id0" in ids and "id0" in res.encoder.adapters
    assert rt.stats.evictions >= 1 and rt.stats.misses == 4
    rt.ensure_adapter(res, "tiny", "id0", lambda: arts[0])
    assert rt.stats.hits == 1
    rt.evict("id1")
    assert "id1" not in res.encoder.adapters and "id1" not in res.encoder.heads
