"""Per-key token buckets for predict calls: `rate` requests per second refill a bucket of `burst`.
A call that finds the bucket empty is refused with 429 and a Retry-After of when a token is due."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from api.errors import Problem


@dataclass
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock=time.monotonic):  # type: ignore[no-untyped-def]
        self.rate, self.burst, self.clock = rate, max(1, burst), clock
        self.buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one token of `key`'s bucket, or raise 429. A rate of 0 turns limiting off."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            b = self.buckets.setdefault(key, Bucket(float(self.burst), now))
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens >= 1:
                b.tokens -= 1
                return
            wait = (1 - b.tokens) / self.rate
        raise Problem(
            429,
            "rate-limited",
            f"this key may make {self.rate:g} predict calls per second (bursts of {self.burst}); retry in {wait:.2f}s",
            retry_after=max(1, math.ceil(wait)),
        )
