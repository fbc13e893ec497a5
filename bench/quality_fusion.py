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
from composer.adapter_training import predict_logits, score, train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.bottleneck.multitask import TaskData, train_multitask
from composer.composition import Fuse, Single
from composer.corpora import load_corpus
from composer.data import Collator
from composer.fusion.modules import FusionConfig
from composer.fusion.recipe import LR_GRID
from composer.fusion.training import SIGNIFICANCE, attention_report, train_fusion
from composer.presets import preset
from composer.training import TrainConfig

SOURCES = ("rt_polarity", "rt_subjectivity", "conll_uncertainty")
METHODS = ("st_a", "mt_a", "fusion_st", "fusion_mt", "fusion_warm")
ABLATIONS = ("fusion_warm_best",)  # run with --methods only
ST_LR = 1e-3
FUSION_LRS = (1e-3, 1e-4, 5e-5)  # the ST-A's rate and two below it; 5e-5 is the paper's
WARM_LRS = LR_GRID  # what a fusion job without a learning rate tries (#18)


def accuracy(model, name, task, rows, max_len, comp):  # type: ignore[no-untyped-def]
    logits = predict_logits(model, name, rows, Collator(model.base.tokenizer, task, max_len), composition=comp)
    return score(task, logits, rows)["accuracy"]


def best_fusion(
    base, task, train, val, test, members, cfg: TrainConfig, max_len: int, lrs, start=None, sig=SIGNIFICANCE
):  # type: ignore[no-untyped-def]
    """Train one fusion per learning rate; keep the one with the best validation accuracy. With `start`,
    each trial is warm-started on that member (the target's own ST-A), as a fusion job does."""
    best = None
    for lr in lrs:
        run_cfg = TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": lr})
        fu = train_fusion(base, task, train, val, members, FusionConfig(), run_cfg, start=start, significance=sig)
        v = fu.result.best_metrics["accuracy"]
        if best is None or v > best[0]:
            best = (v, lr, fu)
    v, lr, fu = best  # type: ignore[misc]
    rep = attention_report(fu.model, fu.name, val, Collator(base.tokenizer, task, max_len))
    return v, accuracy(fu.model, fu.name, task, test, max_len, Fuse(fu.name)), lr, rep["mean_attention"], fu.winner


def _missing(row: dict, methods: tuple[str, ...] = METHODS) -> list[str]:
    return [m for m in methods if m not in row]


def run_seed(seed: int, a: argparse.Namespace, layers: int, sizes, out: list[dict], t0: float, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every (seed, size) row that is missing, or misses a method (--resume completes it: a row of an
    earlier protocol gains the warm-started fusion, on an ST-A trained again with the same seed)."""
    rows = {r["n"]: r for r in out if r["seed"] == seed}
    sizes = [n for n in sizes if n not in rows or _missing(rows[n], a.methods)]
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
    names = list(SOURCES) + ["fine_foods"]
    for n in sizes:
        c = foods.subset(n, seed=seed)
        row: dict = rows.get(n) or {"seed": seed, "n": n}
        todo = _missing(row, a.methods)
        st = train_st_adapter(base, c.task, c.train, val, preset("seq_bn"), tgt_cfg)
        st_scores = (
            st.result.best_metrics["accuracy"],
            accuracy(st.model, st.name, c.task, test, max_len, Single(st.name)),
        )
        row.setdefault("st_a", st_scores)
        st_members = [sources[s][1] for s in SOURCES] + [st.artifact(c.task)]
        if "mt_a" in todo or "fusion_mt" in todo:
            # MT-A: sources + target with the base fine-tuned jointly, on a fresh copy of the base
            mt_base = load_base(packaged_encoder_dir(), num_hidden_layers=layers)
            mt_tasks = [
                TaskData(sources[s][0].task, sources[s][0].train, sources[s][0].validation[: val_n // 2])
                for s in SOURCES
            ]
            mt_tasks.append(TaskData(c.task, c.train, val))
            mt_cfg = TrainConfig(learning_rate=ST_LR, epochs=1 if a.quick else 2, patience=2, **cfg)
            mt = train_multitask(mt_base, mt_tasks, preset("seq_bn"), mt_cfg, base_learning_rate=2e-5)
            mt.derive_base(f"minilm-L{layers}+mt-seed{seed}-n{n}")
            tgt = c.task.name
            row["mt_a"] = (mt.selection[tgt]["accuracy"], accuracy(mt.model, tgt, c.task, test, max_len, Single(tgt)))
            v, t, lr, att, _ = best_fusion(
                mt.model.base, c.task, c.train, val, test, mt.artifacts(mt_tasks), fusion_cfg, max_len, lrs
            )
            row["fusion_mt"], row["fusion_mt_lr"] = (v, t), lr
            row["fusion_mt_attention"] = dict(zip(names, att, strict=True))
        if "fusion_st" in todo:
            v, t, lr, att, _ = best_fusion(base, c.task, c.train, val, test, st_members, fusion_cfg, max_len, lrs)
            row["fusion_st"], row["fusion_st_lr"] = (v, t), lr
            row["fusion_st_attention"] = dict(zip(names, att, strict=True))
        for label, sig in (("fusion_warm", SIGNIFICANCE), ("fusion_warm_best", None)):
            if label not in todo:
                continue
            # warm-started on the target's ST-A, the learning rate from the fusion job's grid (#18); the
            # ablation keeps the best epoch however small its validation margin
            grid = WARM_LRS[:1] if a.quick else WARM_LRS
            v, t, lr, att, winner = best_fusion(
                base, c.task, c.train, val, test, st_members, fusion_cfg, max_len, grid, len(SOURCES), sig
            )
            row[label], row[f"{label}_lr"], row[f"{label}_winner"] = (v, t), lr, winner
            row[f"{label}_start"] = st_scores  # the ST-A it started from (a resumed row trains it again)
            row[f"{label}_attention"] = dict(zip(names, att, strict=True))
        if n not in rows:
            out.append(row)
        path.write_text(json.dumps(out, indent=2) + "\n")  # kept after every row: a run cut short resumes
        print(json.dumps(row), f"({time.time() - t0:.0f}s)", flush=True)


def gains(results: list[dict], label: str, split: int) -> list[float]:
    """Fusion minus the ST-A it was built on, per row (the warm fusion's own start when it has one)."""
    start = f"{label}_start" if label.startswith("fusion_warm") else "st_a"
    return [r[label][split] - r[start][split] for r in results if label in r]


def mean_std(xs: list[float], signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    if not xs:
        return "—"
    return f"{statistics.mean(xs):{f}} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:{f}}"


def cell(rows: list[dict], m: str, i: int) -> str:
    xs = [r[m][i] for r in rows if m in r]
    return mean_std(xs) + (f" ({len(xs)} seed{'s' if len(xs) > 1 else ''})" if xs and len(xs) < len(rows) else "")


def table(results: list[dict], layers: int, quick: bool, seeds: int) -> str:
    foods = load_corpus("fine_foods")
    majority = max(sum(e.label == lab for e in foods.test) for lab in foods.task.labels) / len(foods.test)
    sizes = sorted({r["n"] for r in results})
    lines = [
        f"## Fusion quality on real data ({layers}-layer MiniLM, {seeds} seed(s){', --quick' if quick else ''})",
        "",
        "Sources: 400 training rows each (2 epochs); target ST-A: 5 epochs; MT-A: 2 epochs; each fusion: 3 epochs",
        "per learning rate; inputs cut at 48 tokens; validation 200 rows; `--resume` continues a run cut short.",
        "",
        f"Target fine foods (test: {len(foods.test):,} reviews of other products; majority {majority:.3f}); sources",
        "RT polarity, RT subjectivity, CoNLL uncertainty. MT-A: the four tasks trained jointly with the base",
        "fine-tuned (lr 2e-5; adapters 1e-3), fused on that derived base. The cold fusions start from a fresh",
        "head and uniform attention, their learning rate chosen on validation from",
        f"{', '.join(f'{x:g}' for x in FUSION_LRS)}; the warm fusion starts as the target's ST-A (its head, the",
        f"attention on it, V = I) with the fusion job's grid {', '.join(f'{x:g}' for x in WARM_LRS)}. Validation",
        "picks the epoch (the warm fusion's start counts); an epoch replaces the warm start only when it wins",
        f"significantly (exact one-sided McNemar, p < {SIGNIFICANCE}) — the 'best epoch' ablation keeps any win.",
        "Test is held out. Accuracy, mean ± std over seeds.",
        "",
        "| target rows | seeds | split | ST-A | MT-A (joint) | Fusion (ST-As), cold | Fusion (MT-As), cold"
        " | Fusion (ST-As), warm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        rows = [r for r in results if r["n"] == n]
        for i, split in enumerate(("validation", "test")):
            cells = [cell(rows, m, i) for m in METHODS]
            lines.append(f"| {n} | {len(rows)} | {split} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Fusion minus the ST-A it was built on (mean ± std over seeds; the warm fusion against the ST-A it",
        "started from), and the smallest validation difference:",
        "",
        "| target rows | fusion | validation | test | validation, min |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        rows = [r for r in results if r["n"] == n]
        for label, name in (
            ("fusion_st", "cold"),
            ("fusion_warm_best", "warm, best epoch"),
            ("fusion_warm", "warm, significant gain only"),
        ):
            val, test = gains(rows, label, 0), gains(rows, label, 1)
            low = f"{min(val):+.3f}" if val else "—"
            lines.append(f"| {n} | {name} | {mean_std(val, True)} | {mean_std(test, True)} | {low} |")
    lines += ["", "Learning rates chosen on validation, and mean attention on the target's own adapter:", ""]
    for n in sizes:
        rows = [r for r in results if r["n"] == n]
        for label in ("fusion_st", "fusion_mt", "fusion_warm_best", "fusion_warm"):
            done = [r for r in rows if label in r]
            if not done:
                continue
            lrs = ", ".join(f"{r[f'{label}_lr']:g}" for r in done)
            own = statistics.mean(r[f"{label}_attention"]["fine_foods"] for r in done)
            won = ""
            if label.startswith("fusion_warm"):
                won = "; kept: " + "; ".join(str(r[f"{label}_winner"]) for r in done)
            lines.append(f"- {n} rows, {label}: lr {lrs}; attention on fine foods {own:.2f}{won}")
    return "\n".join(lines)


def summary(results: list[dict]) -> dict[str, float | None]:
    """#18's keys: the warm fusion's smallest validation gain over its ST-A and its mean test gain; the
    cold fusion's beside them."""
    out: dict[str, float | None] = {}
    for prefix, label in (("", "fusion_warm"), ("warm_best_", "fusion_warm_best"), ("cold_", "fusion_st")):
        val, test = gains(results, label, 0), gains(results, label, 1)
        out[f"{prefix}fusion_minus_sta_val_min"] = round(min(val), 4) if val else None
        out[f"{prefix}fusion_minus_sta_test_mean"] = round(statistics.mean(test), 4) if test else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--table-only", action="store_true", help="write the docs table from the rows kept so far")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an earlier run and run the others")
    ap.add_argument(
        "--methods",
        type=lambda v: tuple(v.split(",")),
        default=METHODS,
        help=f"run only these (comma-separated, from {','.join(METHODS)}); the ST-A always runs",
    )
    a = ap.parse_args()
    known = METHODS + ABLATIONS
    if set(a.methods) - set(known):
        ap.error(f"unknown methods {sorted(set(a.methods) - set(known))}; known: {', '.join(known)}")
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
        f"n{n}_{m}_test_mean": statistics.mean(xs)
        for n in sizes
        for m in METHODS
        if (xs := [r[m][1] for r in results if r["n"] == n and m in r])
    }
    emit({**keys, **summary(results), "seeds": seeds, "seconds": round(time.time() - t0)})


if __name__ == "__main__":
    main()
