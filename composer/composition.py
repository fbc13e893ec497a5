"""Compositions are small value objects that say which modules a forward pass runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Single:
    """One adapter (ST-A or an MT-A member)."""

    adapter: str


Composition = Single
