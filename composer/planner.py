"""Choosing an execution plan by measuring it: the runtime tries each plan on live requests of a shape a
few times, then runs the fastest, and measures again now and then (the machine's load changes).

Plans differ in speed only, never in results (see `PromptModel.logits`), so trying one on a live
request costs time, not correctness. Shapes are bucketed (powers of two) so a few trials cover a range.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict, deque
from collections.abc import Hashable, Sequence


def bucket(n: int) -> int:
    """The power of two at or above n."""
    return 1 << max(0, (n - 1).bit_length())


class PlanChooser:
    def __init__(self, plans: Sequence[str], trials: int = 2, refresh: int = 200, keep: int = 8):
        self.plans, self.trials, self.refresh = tuple(plans), trials, refresh
        self._times: dict[Hashable, dict[str, deque[float]]] = defaultdict(
            lambda: {p: deque(maxlen=keep) for p in self.plans}
        )
        self._calls: dict[Hashable, int] = defaultdict(int)
        self._lock = threading.Lock()

    def choose(self, key: Hashable) -> str:
        """A plan still short of its trials (in order), else the fastest by median; every `refresh` calls
        the slowest-measured plan is tried again."""
        with self._lock:
            times = self._times[key]
            self._calls[key] += 1
            for plan in self.plans:
                if len(times[plan]) < self.trials:
                    return plan
            ranked = sorted(self.plans, key=lambda p: statistics.median(times[p]))
            if self._calls[key] % self.refresh == 0:
                return ranked[-1]
            return ranked[0]

    def record(self, key: Hashable, plan: str, seconds: float) -> None:
        with self._lock:
            self._times[key][plan].append(seconds)

    def chosen(self) -> dict[str, str]:
        """For operators: the plan each measured shape runs now."""
        with self._lock:
            out = {}
            for key, times in self._times.items():
                measured = [p for p in self.plans if times[p]]
                if measured:
                    out[str(key)] = min(measured, key=lambda p: statistics.median(times[p]))
            return out
