"""Small in-process caches for the request path: bounded, thread-safe, optionally time-limited."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """The most recently used `max_entries` values; with `ttl`, each lives at most `ttl` seconds
    (ttl 0 keeps nothing)."""

    def __init__(self, max_entries: int, ttl: float | None = None):
        self.max_entries, self.ttl = max_entries, ttl
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.generation = 0  # counts `drop`s: a value read before one must not be put after it

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if self.ttl is not None and time.monotonic() - hit[0] >= self.ttl:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: K, value: V, generation: int | None = None) -> None:
        """Remember a value; with `generation` (read before the value was), only if nothing was dropped since."""
        if self.ttl == 0:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._items[key] = (time.monotonic(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def drop(self, match: Callable[[V], bool]) -> None:
        """Forget every value for which `match` is true."""
        with self._lock:
            self.generation += 1
            for key in [k for k, (_, v) in self._items.items() if match(v)]:
                del self._items[key]
