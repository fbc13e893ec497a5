"""Quality of ST-A, MT-A (joint, base fine-tuned) and AdapterFusion on real data, over seeds.

Target: fine foods (low-resource: 250 / 500 / 1,000 training rows). Sources: RT polarity,
RT subjectivity (related) and CoNLL-2010 uncertainty (unrelated). For each seed and target size:
the target's ST-A; MT-As over sources + target trained jointly with the base (AdapterFusion §2.2;
a derived base); a fusion of the source ST-As + the target ST-A; a fusion of the MT-As on the
derived base. Each fusion's learning rate is chosen on validation from a grid at and below the
ST-A's (the paper uses 5e-5). Validation picks the epoch; test is held out. Mean ± std over seeds.

    .venv/bin/python -m bench.quality_fusion [--quick] [--seeds 3] [--resume] [--table-only]

A full run takes hours on 2 CPU cores; it keeps every finished row in bench/results/quality_fusion.json,
and `--resume` runs only the rows missing there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.common import ROOT, emit, write_section
from composer.adapters.config import preset
from composer.adapters.fusion import FusionConfig
from composer.adapters.fusion_training import attention_report, train_fusion
from composer.adapters.multitask import TaskData, train_multitask
from composer.adapters.training import predict_logits, score, train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.composition import Fuse, Single
from composer.corpora import load_corpus
from composer.data import Collator
from composer.training import TrainConfig

SOURCES = ("rt_polarity", "rt_subjectivity", "conll_uncertainty")
METHODS = ("st_a", "mt_a", "fusion_st", "fusion_mt")
ST_LR = 1e-3
FUSION_LRS = (1e-3, 1e-4, 5e-5)  # the ST-A's rate and two below it; 5e-5 is the paper's


def accuracy(model, name, task, rows, max_len, comp):  # type: ignore[no-untyped-def]
    logits = predict_logits(model, name, rows, Collator(model.base.tokenizer, task, max_len), composition=comp)
    return score(task, logits, rows)["accuracy"]


def best_fusion(base, task, train, val, test, members, cfg: TrainConfig, max_len: int, lrs):  # type: ignore[no-untyped-def]
    """Train one fusion per learning rate; keep the one with the best validation accuracy."""
    best = None
    for lr in lrs:
        run_cfg = TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": lr})
        fu = train_fusion(base, task, train, val, members, FusionConfig(), run_cfg)
        v = fu.result.best_metrics["accuracy"]
        if best is None or v > best[0]:
            best = (v, lr, fu)
    v, lr, fu = best  # type: ignore[misc]
    rep = attention_report(fu.model, fu.name, val, Collator(base.tokenizer, task, max_len))
    return v, accuracy(fu.model, fu.name, task, test, max_len, Fuse(fu.name)), lr, rep["mean_attention"]


def run_seed(seed: int, a: argparse.Namespace, layers: int, sizes, out: list[dict], t0: float, path: Path) -> None:  # type: ignore[no-untyped-def]
    sizes = [n for n in sizes if not any(r["seed"] == seed and r["n"] == n for r in out)]  # --resume
    if not sizes:
        return
    src_rows, max_len, val_n = (300, 64, 150) if a.quick else (400, 48, 200)
    base = load_base(packaged_encoder_dir(), num_hidden_layers=layers)
    cfg = dict(batch_size=32, max_length=max_len, seed=seed)
    st_cfg = TrainConfig(learning_rate=ST_LR, epochs=2, patience=2, **cfg)
    sources = {}
    for name in SOURCES:
        c = load_corpus(name).subset(src_rows, seed=seed)
        run = train_st_adapter(base, c.task, c.train, c.validation[:val_n], preset("seq_bn"), st_cfg)
        sources[name] = (c, run.artifact(c.task))
    foods = load_corpus("fine_foods")
    val, test = foods.validation[:val_n], foods.test
    tgt_cfg = TrainConfig(learning_rate=ST_LR, epochs=2 if a.quick else 5, patience=2, **{**cfg, "batch_size": 16})
    fusion_cfg = TrainConfig.from_dict({**tgt_cfg.to_dict(), "epochs": 2 if a.quick else 3, "patience": 2})
    lrs = FUSION_LRS[:1] + FUSION_LRS[-1:] if a.quick else FUSION_LRS
    for n in sizes:
        c = foods.subset(n, seed=seed)
        row: dict = {"seed": seed, "n": n}
        st = train_st_adapter(base, c.task, c.train, val, preset("seq_bn"), tgt_cfg)
        row["st_a"] = (
            st.result.best_metrics["accuracy"],
            accuracy(st.model, st.name, c.task, test, max_len, Single(st.name)),
        )
        # MT-A: sources + target with the base fine-tuned jointly, on a fresh copy of the base
        mt_base = load_base(packaged_encoder_dir(), num_hidden_layers=layers)
        mt_tasks = [
            TaskData(sources[s][0].task, sources[s][0].train, sources[s][0].validation[: val_n // 2]) for s in SOURCES
        ]
        mt_tasks.append(TaskData(c.task, c.train, val))
        mt_cfg = TrainConfig(learning_rate=ST_LR, epochs=1 if a.quick else 2, patience=2, **cfg)
        mt = train_multitask(mt_base, mt_tasks, preset("seq_bn"), mt_cfg, base_learning_rate=2e-5)
        mt.derive_base(f"minilm-L{layers}+mt-seed{seed}-n{n}")
        tgt = c.task.name
        row["mt_a"] = (mt.selection[tgt]["accuracy"], accuracy(mt.model, tgt, c.task, test, max_len, Single(tgt)))
        names = list(SOURCES) + ["fine_foods"]
        for label, fbase, members in (
            ("fusion_st", base, [sources[s][1] for s in SOURCES] + [st.artifact(c.task)]),
            ("fusion_mt", mt.model.base, mt.artifacts(mt_tasks)),
        ):
            v, t, lr, att = best_fusion(fbase, c.task, c.train, val, test, members, fusion_cfg, max_len, lrs)
            row[label], row[f"{label}_lr"] = (v, t), lr
            row[f"{label}_attention"] = dict(zip(names, att, strict=True))
        out.append(row)
        path.write_text(json.dumps(out, indent=2) + "\n")  # kept after every row: a run cut short resumes
        print(json.dumps(row), f"({time.time() - t0:.0f}s)", flush=True)


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def table(results: list[dict], layers: int, quick: bool, seeds: int) -> str:
    foods = load_corpus("fine_foods")
    majority = max(sum(e.label == lab for e in foods.test) for lab in foods.task.labels) / len(foods.test)
    lines = [
        f"## Fusion quality on real data ({layers}-layer MiniLM, {seeds} seed(s){', --quick' if quick else ''})",
        "",
        "Sources: 400 training rows each (2 epochs); target ST-A: 5 epochs; MT-A: 2 epochs; each fusion: 3 epochs",
        "per learning rate; inputs cut at 48 tokens; validation 200 rows; `--resume` continues a run cut short.",
        "",
        f"Target fine foods (test: {len(foods.test):,} reviews of other products; majority {majority:.3f}); sources",
        "RT polarity, RT subjectivity, CoNLL uncertainty. MT-A: the four tasks trained jointly with the base",
        "fine-tuned (lr 2e-5; adapters 1e-3), fused on that derived base. Each fusion's learning rate is chosen",
        f"on validation from {', '.join(f'{x:g}' for x in FUSION_LRS)}. Accuracy, mean ± std over seeds.",
        "",
        "| target rows | seeds | split | ST-A | MT-A (joint) | Fusion (ST-As) | Fusion (MT-As) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n]
        for i, split in enumerate(("validation", "test")):
            cells = [mean_std([r[m][i] for r in rows]) for m in METHODS]
            lines.append(f"| {n} | {len(rows)} | {split} | " + " | ".join(cells) + " |")
    lines += ["", "Learning rates chosen on validation, and mean attention on the target's own adapter:", ""]
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n]
        for label in ("fusion_st", "fusion_mt"):
            lrs = ", ".join(f"{r[f'{label}_lr']:g}" for r in rows)
            own = statistics.mean(r[f"{label}_attention"]["fine_foods"] for r in rows)
            lines.append(f"- {n} rows, {label}: lr {lrs}; attention on fine foods {own:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--table-only", action="store_true", help="write the docs table from the rows kept so far")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run and run the others")
    a = ap.parse_args()
    torch.set_num_threads(2)
    layers = 2 if a.quick else 6
    sizes = (250,) if a.quick else (250, 500, 1000)
    seeds = a.seeds or (1 if a.quick else 3)
    t0 = time.time()
    # the full run's rows are kept in the repository (hours of CPU); --quick ones in runs/
    path = (
        ROOT / "runs" / "quality_fusion_quick.json" if a.quick else ROOT / "bench" / "results" / "quality_fusion.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = json.loads(path.read_text()) if (a.resume or a.table_only) and path.is_file() else []
    if a.table_only:  # the table from the rows kept so far, with the seeds each size has
        write_section("quality_fusion", table(results, layers, a.quick, len({r["seed"] for r in results})))
        return
    for seed in range(seeds):
        run_seed(seed, a, layers, sizes, results, t0, path)
    write_section("quality_fusion", table(results, layers, a.quick, seeds))
    keys = {
        f"n{n}_{m}_test_mean": statistics.mean(r[m][1] for r in results if r["n"] == n) for n in sizes for m in METHODS
    }
    emit({**keys, "seeds": seeds, "seconds": round(time.time() - t0)})


if __name__ == "__main__":
    main()
