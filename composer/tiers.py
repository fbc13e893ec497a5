"""The serving runtime's LRU tiers, which keep the sum of their entries' bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class Tier(OrderedDict[str, Any]):
    """An LRU of modules that keeps the sum of its entries' bytes (`total`) as they come and go."""

    def __init__(self, size: Callable[[Any], int]):
        super().__init__()
        self.size, self.total = size, 0

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self:
            self.total -= self.size(self[key])
        super().__setitem__(key, value)
        self.total += self.size(value)

    def __delitem__(self, key: str) -> None:
        self.total -= self.size(self[key])
        super().__delitem__(key)

    _absent = object()

    def pop(self, key: str, default: Any = _absent) -> Any:  # type: ignore[override]
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default is Tier._absent:
            raise KeyError(key)
        return default

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        key = next(reversed(self)) if last else next(iter(self))
        return key, self.pop(key)
