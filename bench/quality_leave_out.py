"""AdapterDrop's trade: the accuracy an ST-A keeps when it leaves out the lower layers (`leave_out`), next to
what a Parallel of 8 such adapters saves (those layers run once for all branches). Three real tasks of
DATA.md, the 6-layer MiniLM; accuracy on each task's test split, 95% bootstrap intervals over the test rows
of every seed; speed as Parallel of 8 at that depth ÷ Parallel of 8 at full depth, seq 64, batch 8, CPU.

    .venv/bin/python -m bench.quality_leave_out [--quick] [--seeds 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import alternating, emit, write_section
from bench.quality_merges import correct, interval
from composer.adapter_training import train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.composed import parallel_hidden
from composer.composition import Parallel, Single
from composer.corpora import load_corpus
from composer.encoder import AdaptedEncoder
from composer.presets import preset
from composer.training import TrainConfig

TASKS = ("rt_polarity", "rt_subjectivity", "fine_foods")
DEPTHS = {"none": [], "first 2": [0, 1], "first 4": [0, 1, 2, 3]}


def speed(rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = AdaptedEncoder(load_base(packaged_encoder_dir(), device="cpu")).eval()
    for label, out in DEPTHS.items():
        for i in range(8):
            model.add_adapter(f"{label}{i}", preset("seq_bn", leave_out=out))
    ids = torch.randint(1000, 20000, (8, 64))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    def run(label: str):  # type: ignore[no-untyped-def]
        def go() -> object:
            with torch.no_grad():
                return parallel_hidden(model, batch, Parallel(*[f"{label}{i}" for i in range(8)]))

        return go

    samples: dict[str, list[float]] = {k: [] for k in DEPTHS}
    for rnd in range(rounds):
        for k, v in alternating({k: run(k) for k in DEPTHS}, rnd, 3).items():
            samples[k].append(v)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {k: med[k] / med["none"] for k in DEPTHS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    n, max_len, val_n, test_n, epochs = (300, 48, 100, 200, 1) if a.quick else (1000, 64, 200, 1000, 3)
    base = load_base(packaged_encoder_dir(), num_hidden_layers=2 if a.quick else 6)
    got: dict[tuple[str, str], list[list[int]]] = {}
    for seed in range(a.seeds):
        cfg = TrainConfig(learning_rate=1e-3, epochs=epochs, patience=2, batch_size=32, max_length=max_len, seed=seed)
        for t in TASKS:
            c = load_corpus(t).subset(n, seed=seed)
            for label, out in DEPTHS.items():
                out = [i for i in out if i < base.num_layers - 1]
                run = train_st_adapter(
                    base, c.task, c.train, c.validation[:val_n], preset("seq_bn", leave_out=out), cfg
                )
                rows = correct(run.model, run.name, c.task, c.test[:test_n], max_len, Single(run.name))
                got.setdefault((t, label), []).append(rows)
                print(t, label, round(statistics.mean(rows), 3), f"({time.time() - t0:.0f}s)", flush=True)
    ratio = speed(2 if a.quick else 5)
    lines = [
        f"## AdapterDrop: leaving out lower layers ({'2' if a.quick else '6'}-layer MiniLM, {a.seeds} seed(s))",
        "",
        "| layers left out | "
        + " | ".join(f"{t} accuracy [95%]" for t in TASKS)
        + " | mean Δ vs none | Parallel of 8 ÷ full depth |",
        "|---|" + "---|" * (len(TASKS) + 2),
    ]
    summary: dict = {}
    full = statistics.mean(interval(got[(t, "none")])[0] for t in TASKS)
    for label in DEPTHS:
        cells = [interval(got[(t, label)]) for t in TASKS]
        mean = statistics.mean(c[0] for c in cells)
        summary[f"accuracy_{label.replace(' ', '_')}"] = round(mean, 4)
        summary[f"parallel8_{label.replace(' ', '_')}_over_full"] = round(ratio[label], 3)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in cells)
            + f" | {mean - full:+.3f} | {ratio[label]:.3f} |"
        )
    lines += [
        "",
        "Each ST-A is seq_bn, trained as a job trains it on 1,000 rows; speed in the same run, Parallel of 8 "
        "random adapters with that `leave_out` (AdapterDrop reports 39% faster for 8 tasks with 5 of 12 layers "
        "dropped).",
    ]
    write_section("quality_leave_out", "\n".join(lines))
    emit({**summary, "seconds": round(time.time() - t0)})


if __name__ == "__main__":
    main()
