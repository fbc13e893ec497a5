"""Compositions are small value objects that say which modules a forward pass runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Single:
    """One adapter (ST-A or an MT-A member)."""

    adapter: str


@dataclass(frozen=True)
class Fuse:
    """A fusion over its member adapters (the members are fixed when the fusion is added)."""

    fusion: str


@dataclass(frozen=True)
class Mixed:
    """A micro-batch whose rows use different single adapters: `adapters[i]` serves row i (None: the plain base)."""

    adapters: tuple[str | None, ...]


Composition = Single | Fuse | Mixed
