"""Composition blocks' cost on the real MiniLM (H=384, 6 layers), seq 64, batch 8, CPU: Stack(a, b) ÷ one
adapter; Parallel of 8 ÷ 8 single calls; a batch of 8 rows each with its own tree ÷ 8 rows of one tree.
Side by side in one process, alternating rounds, medians.

    .venv/bin/python -m bench.composition [--quick]

Not measured yet (issue #28's later parts): AdapterDrop's Parallel with `leave_out` (which needs the
shared lower layers run once), merged adapters, and the quality of merges on real tasks.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.common import alternating, emit, write_section
from composer.base import load_base, packaged_encoder_dir
from composer.composed import parallel_hidden
from composer.composition import Average, BatchSplit, Parallel, Single, Stack
from composer.encoder import AdaptedEncoder
from composer.presets import preset

SEQ, B = 64, 8


def build() -> tuple[AdaptedEncoder, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = AdaptedEncoder(load_base(packaged_encoder_dir(), device="cpu")).eval()
    for i in range(8):
        model.add_adapter(f"a{i}", preset("seq_bn"))
        with torch.no_grad():
            for p in model.adapters[f"a{i}"].parameters():
                p.normal_(0, 0.05)
    ids = torch.randint(1000, 20000, (B, SEQ))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return model, batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    model, batch = build()
    trees = [Stack(f"a{i}", f"a{(i + 1) % 8}") if i % 2 else Average(f"a{i}", f"a{(i + 1) % 8}") for i in range(8)]

    def fwd(comp):  # type: ignore[no-untyped-def]
        def run() -> object:
            with torch.no_grad():
                return model(**batch, composition=comp).hidden

        return run

    def eight_singles() -> object:
        with torch.no_grad():
            return [model(**batch, composition=Single(f"a{i}")).hidden for i in range(8)]

    def parallel8() -> object:
        with torch.no_grad():
            return parallel_hidden(model, batch, Parallel(*[f"a{i}" for i in range(8)]))

    runs = {
        "single": fwd(Single("a0")),
        "stack2": fwd(Stack("a0", "a1")),
        "parallel8": parallel8,
        "eight_singles": eight_singles,
        "same_tree8": fwd(Stack("a0", "a1")),
        "mixed_trees8": fwd(BatchSplit(tuple(trees))),
    }
    rounds, repeats = (2, 2) if a.quick else (5, 5)
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for rnd in range(rounds):
        for k, v in alternating(runs, rnd, repeats).items():
            samples[k].append(v)
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "single_ms_b8": round(med["single"], 2),
        "stack2_over_single": round(med["stack2"] / med["single"], 3),
        "parallel8_over_8_single": round(med["parallel8"] / med["eight_singles"], 3),
        "mixed_trees8_over_same8": round(med["same_tree8"] / med["mixed_trees8"], 3),
    }
    rows = [
        "## Composition blocks (6-layer MiniLM, H=384, seq 64, batch 8, CPU, 2 threads)",
        "",
        "| measure | ratio | goal |",
        "|---|---|---|",
        f"| Stack(a, b) ÷ one adapter | {result['stack2_over_single']} | – |",
        f"| Parallel of 8 (one forward over the batch ×8) ÷ 8 single calls | {result['parallel8_over_8_single']} | ≤ 0.8 |",
        f"| 8 rows of one tree ÷ 8 rows each with its own tree (throughput ratio) | {result['mixed_trees8_over_same8']} | ≥ 0.9 |",
        "",
        f"One seq_bn adapter at batch 8: {result['single_ms_b8']} ms. Median of {rounds} alternating rounds"
        f"{' (--quick)' if a.quick else ''}. The Parallel runs every layer for every branch (no layer is shared "
        "yet); rows of different trees run per group at each site.",
    ]
    write_section("composition", "\n".join(rows))
    emit(result)


if __name__ == "__main__":
    main()
