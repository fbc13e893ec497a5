"""Per-adapter metrics on /metrics: requests, latency and cache events per adapter, with the label set
bounded to the top N adapters by requests (the rest under adapter="other")."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest

from api.adapter_metrics import AdapterMetrics


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            out[labels] = float(value)
    return out


def test_labels_are_bounded_to_the_top_adapters():
    events = Counter({(f"a{i}", "misses"): 1 for i in range(5)} | {("a0", "hits"): 9})
    m = AdapterMetrics(lambda: events, top_n=2)
    for i in range(5):
        for _ in range(5 - i):  # a0: 5 requests ... a4: 1
            m.observe(f"a{i}", 0.02 * (i + 1))
    reg = CollectorRegistry()
    reg.register(m)
    text = generate_latest(reg).decode()
    requests = _samples(text, "composer_adapter_requests_total")
    assert requests == {'adapter="a0"': 5, 'adapter="a1"': 4, 'adapter="other"': 6}
    counts = _samples(text, "composer_adapter_request_seconds_count")
    assert counts == {'adapter="a0"': 5, 'adapter="a1"': 4, 'adapter="other"': 6}
    buckets = _samples(text, "composer_adapter_request_seconds_bucket")
    assert buckets['adapter="a0",le="0.025"'] == 5 and buckets['adapter="a1",le="0.025"'] == 0
    cache = _samples(text, "composer_adapter_cache_events_total")
    assert cache['adapter="a0",event="hits"'] == 9 and cache['adapter="other",event="misses"'] == 3
    labels = {k.split(",")[0] for k in (*requests, *buckets, *cache)}
    assert labels == {'adapter="a0"', 'adapter="a1"', 'adapter="other"'}


def test_metrics_endpoint_has_the_served_adapter(api):
    ids = api.task_with_data()
    a = api.train_adapter(ids)
    for _ in range(2):
        r = api.client.post("/v1/predict", headers=api.h(), json={"adapter": a, "inputs": [{"text": "good movie"}]})
        assert r.status_code == 200
    text = api.client.get("/metrics", headers=api.h()).text
    assert _samples(text, "composer_adapter_requests_total")[f'adapter="{a}"'] == 2
    cache = _samples(text, "composer_adapter_cache_events_total")
    assert cache[f'adapter="{a}",event="misses"'] == 1 and cache[f'adapter="{a}",event="hits"'] == 1
