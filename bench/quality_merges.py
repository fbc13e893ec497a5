"""How much of each task survives a merge: three real tasks of DATA.md (RT polarity, RT subjectivity, fine
foods), one ST-A each from one seeded starting point, then each member alone, their Average (the
composition block), and their linear, TIES and DARE merges (one adapter), each scored on every member's own
test set through that member's head; and a fusion of the three per target (warm-started on the target's
member, as a fusion job does). Retention is (accuracy − majority) ÷ (the member alone − majority). 3 seeds;
95% intervals from a bootstrap over the test rows of every seed.

    .venv/bin/python -m bench.quality_merges [--quick] [--seeds 3] [--resume] [--table-only]

Rows are kept in bench/results/quality_merges.json (runs/ for --quick) after every seed; --resume runs
only the seeds missing there.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from bench.common import ROOT, emit, write_section
from composer import adapter_artifact as artifacts
from composer.adapter_training import predict_logits, train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.bottleneck.merge import merge_bottlenecks
from composer.composition import Average, Fuse, Single
from composer.corpora import load_corpus
from composer.data import Collator
from composer.encoder import AdaptedEncoder
from composer.fusion.modules import FusionConfig
from composer.fusion.training import train_fusion
from composer.presets import preset
from composer.training import TrainConfig

TASKS = ("rt_polarity", "rt_subjectivity", "fine_foods")
MERGES = {  # label: (method, density)
    "linear": ("linear", 1.0),
    "ties": ("ties", 0.5),
    "dare_linear": ("dare_linear", 0.5),
    "dare_ties": ("dare_ties", 0.5),
}
METHODS = ("alone", "average", *MERGES, "fusion")


def correct(model, head, task, rows, max_len, comp) -> list[int]:  # type: ignore[no-untyped-def]
    logits = predict_logits(model, head, rows, Collator(model.base.tokenizer, task, max_len), composition=comp)
    gold = [task.labels.index(r.label) for r in rows]
    return [int(p == g) for p, g in zip(logits.argmax(-1).tolist(), gold, strict=True)]


def run_seed(seed: int, quick: bool, layers: int) -> dict:
    n, max_len, val_n, test_n = (300, 48, 100, 200) if quick else (1000, 64, 200, 1000)
    base = load_base(packaged_encoder_dir(), num_hidden_layers=layers)
    cfg = TrainConfig(
        learning_rate=1e-3, epochs=2 if quick else 3, patience=2, batch_size=32, max_length=max_len, seed=seed
    )
    corpora = {t: load_corpus(t).subset(n, seed=seed) for t in TASKS}
    members = []
    for t in TASKS:  # one seed: every member starts from the same adapter initialisation
        c = corpora[t]
        members.append(
            train_st_adapter(base, c.task, c.train, c.validation[:val_n], preset("seq_bn"), cfg).artifact(c.task)
        )
    model = AdaptedEncoder(base).eval()
    for t, art in zip(TASKS, members, strict=True):
        artifacts.attach(model, art, name=t)
    for label, (method, density) in MERGES.items():
        mcfg, tensors = merge_bottlenecks(members, [1.0 / len(members)] * len(members), method, density, seed)
        if method in ("ties", "dare_ties"):  # PEFT's TIES sums the agreeing values' weighted mean: weights of 1
            mcfg, tensors = merge_bottlenecks(members, [1.0] * len(members), method, density, seed)
        model.add_adapter(label, mcfg, {k[len("adapter.") :]: v for k, v in tensors.items()})
    row: dict = {"seed": seed, "tasks": {}}
    fusion_cfg = TrainConfig.from_dict({**cfg.to_dict(), "epochs": 1 if quick else 2})
    for i, t in enumerate(TASKS):
        c = corpora[t]
        test = c.test[:test_n]
        gold = [c.task.labels.index(r.label) for r in test]
        majority = max(gold.count(k) for k in set(gold)) / len(gold)
        comps = {"alone": Single(t), "average": Average(*TASKS), **{m: Single(m) for m in MERGES}}
        got = {m: correct(model, t, c.task, test, max_len, comp) for m, comp in comps.items()}
        run = train_fusion(base, c.task, c.train, c.validation[:val_n], members, FusionConfig(), fusion_cfg, start=i)
        got["fusion"] = correct(run.model, run.name, c.task, test, max_len, Fuse(run.name))
        row["tasks"][t] = {"majority": majority, "correct": got}
        print(t, {m: round(statistics.mean(v), 3) for m, v in got.items()}, flush=True)
    return row


def interval(per_seed: list[list[int]], draws: int = 1000) -> tuple[float, float, float]:
    """Mean accuracy over seeds, and a 95% bootstrap interval (test rows resampled within each seed)."""
    rng = random.Random(0)
    mean = statistics.mean(statistics.mean(v) for v in per_seed)
    boots = sorted(statistics.mean(statistics.mean(rng.choices(v, k=len(v))) for v in per_seed) for _ in range(draws))
    return mean, boots[int(0.025 * draws)], boots[int(0.975 * draws) - 1]


def table(results: list[dict], layers: int, quick: bool) -> tuple[str, dict]:
    head = "| method | " + " | ".join(f"{t}: accuracy [95%] (retention)" for t in TASKS) + " |"
    lines = [
        f"## Merges on real tasks ({layers}-layer MiniLM, {len(results)} seed(s){', --quick' if quick else ''})",
        "",
        head,
        "|---|" + "---|" * len(TASKS),
    ]
    summary: dict = {}
    alone = {t: statistics.mean(statistics.mean(r["tasks"][t]["correct"]["alone"]) for r in results) for t in TASKS}
    majority = {t: statistics.mean(r["tasks"][t]["majority"] for r in results) for t in TASKS}
    for m in METHODS:
        cells = []
        for t in TASKS:
            mean, lo, hi = interval([r["tasks"][t]["correct"][m] for r in results])
            if alone[t] - majority[t] < 0.02:  # the member learnt nothing above majority: no retention to read
                cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (n/a)")
                continue
            keep = (mean - majority[t]) / (alone[t] - majority[t])
            summary[f"{m}_{t}_retention"] = round(keep, 3)
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}] ({keep:.0%})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    worst = {m: min((summary.get(f"{m}_{t}_retention", 1.0) for t in TASKS), default=1.0) for m in METHODS}
    lines += [
        "",
        "Majority: " + ", ".join(f"{t} {majority[t]:.3f}" for t in TASKS) + ". Each member is an ST-A (seq_bn) "
        "trained from the same seeded initialisation; every row is scored through each member's own head. "
        "Goal: a merge of 3 keeps ≥ 90% of each member's accuracy above majority; the worst retention of each "
        "method: " + ", ".join(f"{m} {worst[m]:.0%}" for m in METHODS) + ".",
    ]
    summary.update({f"{m}_worst_retention": worst[m] for m in METHODS})
    return "\n".join(lines), summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--table-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    layers, seeds = (2, a.seeds or 1) if a.quick else (6, a.seeds or 3)
    path = ROOT / ("runs/quality_merges_quick.json" if a.quick else "bench/results/quality_merges.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = json.loads(path.read_text()) if (a.resume or a.table_only) and path.is_file() else []
    t0 = time.time()
    if not a.table_only:
        for seed in range(seeds):
            if any(r["seed"] == seed for r in results):
                continue
            results.append(run_seed(seed, a.quick, layers))
            path.write_text(json.dumps(results) + "\n")
    text, summary = table(results, layers, a.quick)
    write_section("quality_merges", text)
    emit({**summary, "seeds": len(results), "seconds": round(time.time() - t0)})


if __name__ == "__main__":
    main()
