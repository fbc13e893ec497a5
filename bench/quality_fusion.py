"""Quality of ST-A, MT-A and AdapterFusion on real data (docs/data.md), with the real encoder.

Target: fine foods (low-resource: 250 / 500 / 1,000 training rows). Sources: RT polarity,
RT subjectivity (related) and CoNLL-2010 uncertainty (unrelated). For each target size:
the target's ST-A; an MT-A set over sources + target; fusion of the source ST-As + the
target ST-A; fusion of the MT-A members. Validation picks the best epoch; test is held out.

    .venv/bin/python -m bench.quality_fusion [--quick]      # full: about 30 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
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


def evaluate(model, name, task, rows, max_len, comp):  # type: ignore[no-untyped-def]
    logits = predict_logits(model, name, rows, Collator(model.base.tokenizer, task, max_len), composition=comp)
    return score(task, logits, rows)["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    layers = 2 if a.quick else 6
    sizes = (250,) if a.quick else (250, 500, 1000)
    src_rows, max_len, val_n = (400, 64, 200) if a.quick else (2000, 64, 400)
    epochs = 2 if a.quick else 10
    base = load_base(packaged_encoder_dir(), num_hidden_layers=layers)
    st_cfg = TrainConfig(learning_rate=1e-3, epochs=2 if a.quick else 3, batch_size=32, max_length=max_len, patience=2)
    t0 = time.time()
    sources = {}
    for name in SOURCES:
        c = load_corpus(name).subset(src_rows)
        run = train_st_adapter(base, c.task, c.train, c.validation[:val_n], preset("seq_bn"), st_cfg)
        sources[name] = (c, run.artifact(c.task), run.result.best_metrics["accuracy"])
        print(f"source {name}: val acc {sources[name][2]:.3f} ({time.time() - t0:.0f}s)", flush=True)
    foods = load_corpus("fine_foods")
    val, test = foods.validation[:val_n], foods.test
    majority = max(sum(e.label == lab for e in test) for lab in foods.task.labels) / len(test)
    results = []
    tgt_cfg = TrainConfig(learning_rate=1e-3, epochs=epochs, batch_size=16, max_length=max_len, patience=3)
    for n in sizes:
        c = foods.subset(n)
        row: dict = {"n": n}
        st = train_st_adapter(base, c.task, c.train, val, preset("seq_bn"), tgt_cfg)
        row["st_a"] = (
            st.result.best_metrics["accuracy"],
            evaluate(st.model, st.name, c.task, test, max_len, Single(st.name)),
        )
        mt_tasks = [
            TaskData(sources[s][0].task, sources[s][0].train, sources[s][0].validation[: val_n // 2]) for s in SOURCES
        ]
        mt_tasks.append(TaskData(c.task, c.train, val))
        mt_cfg = TrainConfig(
            learning_rate=1e-3, epochs=1 if a.quick else 3, batch_size=32, max_length=max_len, patience=2
        )
        mt = train_multitask(base, mt_tasks, preset("seq_bn"), mt_cfg)
        tgt = c.task.name
        row["mt_a"] = (
            evaluate(mt.model, tgt, c.task, val, max_len, Single(tgt)),
            evaluate(mt.model, tgt, c.task, test, max_len, Single(tgt)),
        )
        fusion_cfg = FusionConfig()
        for label, members in (("fusion_st", [sources[s][1] for s in SOURCES] + [st.artifact(c.task)]),
                               ("fusion_mt", mt.artifacts(mt_tasks))):  # fmt: skip
            fu = train_fusion(base, c.task, c.train, val, members, fusion_cfg, tgt_cfg)
            acc_test = evaluate(fu.model, fu.name, c.task, test, max_len, Fuse(fu.name))
            rep = attention_report(fu.model, fu.name, val, Collator(base.tokenizer, c.task, max_len))
            row[label] = (fu.result.best_metrics["accuracy"], acc_test)
            row[f"{label}_attention"] = dict(zip(list(SOURCES) + ["fine_foods"], rep["mean_attention"], strict=True))
        results.append(row)
        print(json.dumps(row), f"({time.time() - t0:.0f}s)", flush=True)
    out = Path(ROOT / "runs")
    out.mkdir(exist_ok=True)
    (out / "quality_fusion.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"## Fusion quality on real data ({layers}-layer MiniLM{', --quick' if a.quick else ''})",
        "",
        f"Target fine foods (test: 1,000 reviews of other products; majority {majority:.3f}); sources RT polarity,",
        f"RT subjectivity, CoNLL uncertainty ({src_rows} rows each). Accuracy, validation / test.",
        "",
        "| target rows | ST-A | MT-A | Fusion (ST-As) | Fusion (MT-As) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        cells = [f"{r[k][0]:.3f} / {r[k][1]:.3f}" for k in ("st_a", "mt_a", "fusion_st", "fusion_mt")]
        lines.append(f"| {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Mean fusion attention per source (ST-A fusion):", ""]
    for r in results:
        lines.append(f"- {r['n']} rows: " + ", ".join(f"{k} {v:.2f}" for k, v in r["fusion_st_attention"].items()))
    write_section("quality_fusion", "\n".join(lines))
    emit({f"n{r['n']}_{k}_test": r[k][1] for r in results for k in ("st_a", "mt_a", "fusion_st", "fusion_mt")})


if __name__ == "__main__":
    main()
