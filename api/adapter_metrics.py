"""Per-adapter serving metrics for `/metrics`, with a bounded label set.

Every adapter's request count, latency histogram and cache hits and misses are kept in memory (a
few counters each), but only the `top_n` adapters by requests get their own `adapter` label at
scrape time; the rest are summed under `adapter="other"`, so 1,000 adapters do not become 1,000
label values for each series.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AdapterMetrics(Collector):
    def __init__(self, cache_events: Callable[[], Counter[tuple[str, str]]], top_n: int = 100):
        self.top_n = top_n
        self.cache_events = cache_events  # the runtime's per-module hits and misses
        self.requests: Counter[str] = Counter()
        self.buckets: dict[str, list[int]] = {}
        self.sums: Counter[str] = Counter()
        self._lock = threading.Lock()

    def observe(self, adapter_id: str, seconds: float) -> None:
        with self._lock:
            self.requests[adapter_id] += 1
            self.sums[adapter_id] += seconds
            counts = self.buckets.setdefault(adapter_id, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1

    def _label(self, top: set[str]) -> Callable[[str], str]:
        return lambda adapter_id: adapter_id if adapter_id in top else "other"

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            requests, sums = Counter(self.requests), Counter(self.sums)
            buckets = {k: list(v) for k, v in self.buckets.items()}
        events = Counter(self.cache_events())
        top = {a for a, _ in requests.most_common(self.top_n)}
        label = self._label(top)
        req = CounterMetricFamily(
            "composer_adapter_requests", "predict requests per adapter (top N)", labels=["adapter"]
        )
        merged: Counter[str] = Counter()
        for a, n in requests.items():
            merged[label(a)] += n
        for a, n in sorted(merged.items()):
            req.add_metric([a], n)
        yield req
        hist = HistogramMetricFamily(
            "composer_adapter_request_seconds", "predict latency per adapter (top N)", labels=["adapter"]
        )
        per: dict[str, list[int]] = {}
        total: Counter[str] = Counter()
        for a, counts in buckets.items():
            acc = per.setdefault(label(a), [0] * (len(BUCKETS) + 1))
            for i, c in enumerate(counts):
                acc[i] += c
            total[label(a)] += sums[a]
        for a, counts in sorted(per.items()):
            cumulative, running = [], 0
            for bound, c in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += c
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
            hist.add_metric([a], cumulative, total[a])
        yield hist
        cache = CounterMetricFamily(
            "composer_adapter_cache_events",
            "serving cache hits and misses per adapter (top N)",
            labels=["adapter", "event"],
        )
        merged_events: Counter[tuple[str, str]] = Counter()
        for (a, event), n in events.items():
            merged_events[(label(a), event)] += n
        for (a, event), n in sorted(merged_events.items()):
            cache.add_metric([a, event], n)
        yield cache
