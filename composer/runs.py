"""A mixed batch's rows by module, as runs of consecutive rows.

Rows on one module sit next to each other once the batch is ordered by module (`composer.rows` orders it), so
a module's rows are a slice of the batch: a view, with nothing to gather or scatter. Where a method's modules cover
only some rows of a batch (the others are rows of other kinds) in a few runs, the method applies each module to
its own slices (a few small ops per module and site); otherwise one gathered pass over every row (Punica's BGMV)
costs less than a pass per run, and wastes nothing on rows that are not the method's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from composer.injection import LinearHandler

M = TypeVar("M")

# at most this many runs (of all modules together): per-run ops; more: the gathered form. On the CPU (MiniLM, 8
# rows of ~13 tokens) a run costs a few ops of ~10 µs at each site: with every row on a module of the method,
# gathering 8 rows cost no more than 2 runs (bottleneck 18.5 against 20.1 ms, LoRA and (IA)³ within noise) and
# less than 4-8; with rows of other kinds beside them, the gathered form computes those rows too and puts them
# back, and runs win (8 kinds of one row each: 24 against 30 ms).
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


def few_runs(runs: dict[M, list[slice]], rows: int) -> bool:
    """Whether per-run ops beat the gathered form: few runs, and rows of the batch that are not the method's."""
    covered = sum(r.stop - r.start for v in runs.values() for r in v)
    return covered < rows and sum(len(v) for v in runs.values()) <= MAX_RUNS


Add = Callable[[torch.Tensor, torch.Tensor], object]  # (the rows' view of the output, their input): adds in place


def add_on_runs(runs: dict[M, list[slice]], updates: Callable[[M], dict[tuple[int, str], Add]]) -> LinearHandler:
    """A linear handler for methods that add to a linear's output (LoRA, AdaLoRA, diff): the bare linear once for
    the batch, then each module's update of each linear (`updates(module)`, by (layer, linear)) added in place to
    its own rows' view of the output."""
    per = {a: updates(a) for a in runs}
    keys = {k for u in per.values() for k in u}

    def handle(
        layer: int, name: str, x: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor | None:
        key = (layer, name)
        if key not in keys:
            return None
        out = linear(x)
        for a, slices in runs.items():
            update = per[a].get(key)
            if update is not None:
                for rows in slices:
                    update(out[rows], x[rows])
        return out

    return handle
