"""A mixed batch's rows by module, as runs of consecutive rows.

Rows on one module sit next to each other once the batch is ordered by module (`composer.rows` orders it), so
a module's rows are a slice of the batch: a view, with nothing to gather or scatter. Where a batch has few runs,
the methods apply each module to its own slices (a few small ops per module and site); with many, one gathered
pass over every row (Punica's BGMV) costs less than a pass per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

M = TypeVar("M")

# at most this many runs (of all modules together): per-run ops; more: the gathered form. On the CPU a run costs
# a few ops of ~10 µs at each site, about what building and applying the gathered weights costs for 4-5 rows.
MAX_RUNS = 4


def row_runs(modules: Sequence[M | None]) -> dict[M, list[slice]]:
    """Per distinct module (None, a row without one, left out), the maximal runs of consecutive rows on it."""
    runs: dict[M, list[slice]] = {}
    start = 0
    for i in range(1, len(modules) + 1):
        if i == len(modules) or modules[i] is not modules[start]:
            if modules[start] is not None:
                runs.setdefault(modules[start], []).append(slice(start, i))  # type: ignore[arg-type]
            start = i
    return runs


def few_runs(runs: dict[M, list[slice]]) -> bool:
    return sum(len(v) for v in runs.values()) <= MAX_RUNS
