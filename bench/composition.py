"""Composition blocks' cost on the real MiniLM (H=384, 6 layers), seq 64, batch 8, CPU: Stack(a, b) ÷ one
adapter; Parallel of 8 ÷ 8 single calls; Parallel of 8 adapters that leave out the first 4 of 6 layers
(AdapterDrop: those layers run once) ÷ Parallel of 8 at full depth; a merged adapter of 3 ÷ one adapter;
a batch of 8 rows each with its own tree ÷ 8 rows of one tree. Side by side in one process, alternating
rounds, medians; adapters 1.3.0's times for the same blocks beside them when the parity venv exists.

    .venv/bin/python -m bench.composition [--quick]

The quality of merges on real tasks is bench/quality_merges.py.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.common import alternating, emit, run_parity, write_section
from composer.base import load_base, packaged_encoder_dir
from composer.composed import parallel_hidden
from composer.composition import Average, BatchSplit, Parallel, Single, Stack
from composer.encoder import AdaptedEncoder
from composer.merging import combine
from composer.presets import preset

SEQ, B = 64, 8


def build() -> tuple[AdaptedEncoder, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = AdaptedEncoder(load_base(packaged_encoder_dir(), device="cpu")).eval()
    for i in range(8):
        model.add_adapter(f"a{i}", preset("seq_bn"))
        model.add_adapter(f"d{i}", preset("seq_bn", leave_out=[0, 1, 2, 3]))
        with torch.no_grad():
            for name in (f"a{i}", f"d{i}"):
                for p in model.adapters[name].parameters():
                    p.normal_(0, 0.05)
    # a TIES merge of three adapters is one adapter of the same shape (it serves at that adapter's cost)
    members = [model.adapters[f"a{i}"].state_dict() for i in range(3)]
    merged = {k: combine([m[k] for m in members], [1.0, 1.0, 1.0], "ties", 0.5) for k in members[0]}
    model.add_adapter("merged3", preset("seq_bn"), merged)
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

    def parallel8(prefix: str):  # type: ignore[no-untyped-def]
        def run() -> object:
            with torch.no_grad():
                return parallel_hidden(model, batch, Parallel(*[f"{prefix}{i}" for i in range(8)]))

        return run

    runs = {
        "single": fwd(Single("a0")),
        "stack2": fwd(Stack("a0", "a1")),
        "merged3": fwd(Single("merged3")),
        "parallel8": parallel8("a"),
        "parallel8_leave_out": parallel8("d"),
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
        "parallel8_leave_out_over_full": round(med["parallel8_leave_out"] / med["parallel8"], 3),
        "merged3_over_single": round(med["merged3"] / med["single"], 3),
        "mixed_trees8_over_same8": round(med["same_tree8"] / med["mixed_trees8"], 3),
    }
    ref = run_parity("_adapters_composition.py", str(packaged_encoder_dir()), str(3 if a.quick else 10))
    hub = "–"
    if ref is not None:
        result["adapterhub_stack2_over_single"] = round(ref["stack2"] / ref["single"], 3)
        result["adapterhub_parallel8_leave_out_over_full"] = round(ref["parallel8_leave_out"] / ref["parallel8"], 3)
        result["ours_over_adapterhub_parallel8"] = round(med["parallel8"] / ref["parallel8"], 3)
        result["ours_over_adapterhub_stack2"] = round(med["stack2"] / ref["stack2"], 3)
        hub = (
            f"adapters 1.3.0 on the same model and input: Stack(a, b) ÷ one adapter "
            f"{result['adapterhub_stack2_over_single']}; Parallel of 8 with the first 4 layers left out ÷ at full "
            f"depth {result['adapterhub_parallel8_leave_out_over_full']}; our time ÷ theirs: Stack(a, b) "
            f"{result['ours_over_adapterhub_stack2']}, Parallel of 8 {result['ours_over_adapterhub_parallel8']} "
            "(their process runs alone after ours, not interleaved)."
        )
    rows = [
        "## Composition blocks (6-layer MiniLM, H=384, seq 64, batch 8, CPU, 2 threads)",
        "",
        "| measure | ratio | goal |",
        "|---|---|---|",
        f"| Stack(a, b) ÷ one adapter | {result['stack2_over_single']} | – |",
        f"| Parallel of 8 (one forward over the batch ×8) ÷ 8 single calls | {result['parallel8_over_8_single']} | ≤ 0.8 |",
        f"| Parallel of 8, first 4 of 6 layers left out (run once) ÷ Parallel of 8 at full depth | {result['parallel8_leave_out_over_full']} | ≤ 0.5 |",
        f"| a TIES merge of 3 adapters ÷ one adapter | {result['merged3_over_single']} | 1.0 ± 0.05 |",
        f"| 8 rows of one tree ÷ 8 rows each with its own tree (throughput ratio) | {result['mixed_trees8_over_same8']} | ≥ 0.9 |",
        "",
        f"One seq_bn adapter at batch 8: {result['single_ms_b8']} ms. Median of {rounds} alternating rounds"
        f"{' (--quick)' if a.quick else ''}. A Parallel at full depth replicates the batch after the embeddings; "
        "one whose branches all leave out the lower layers runs them once and replicates above them. Rows of "
        "different trees run per group at each site.",
        "",
        hub,
    ]
    write_section("composition", "\n".join(rows))
    emit(result)


if __name__ == "__main__":
    main()
