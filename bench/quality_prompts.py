"""Quality of K=5 soft prompts and their ensembles on real data, shallow and deep, with the real encoder.

For each task (RT polarity, fine foods, CoNLL uncertainty): train K prompts jointly (validation
picks the epoch), then score on a held-out test split each prompt, their mean, the best one (an
oracle) and the ensemble under every voting rule, with a paired bootstrap 95% interval for
ensemble − mean prompt.

    .venv/bin/python -m bench.quality_prompts [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import ROOT, emit, write_section
from composer.base import load_base, packaged_encoder_dir
from composer.corpora import load_corpus
from composer.data import Collator
from composer.prompts.ensemble import VOTING_RULES, vote
from composer.prompts.prompt import PromptConfig
from composer.prompts.training import batched_logits, train_prompts
from composer.training import TrainConfig

TASKS = ("rt_polarity", "fine_foods", "conll_uncertainty")
RECIPES = {  # published starting points: shallow ~0.3 with label/vocab init; deep (P-tuning v2) 5e-3..1e-2
    "shallow": (PromptConfig(length=20, kind="shallow"), 0.3),
    "deep": (PromptConfig(length=16, kind="deep"), 1e-2),
}


def bootstrap_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a - b) over resampled test rows (paired)."""
    rng = np.random.default_rng(seed)
    d = a.astype(float) - b.astype(float)
    idx = rng.integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    layers = 2 if a.quick else 6
    n_train, n_val, n_test, epochs = (128, 64, 128, 1) if a.quick else (600, 200, 600, 4)
    tasks = TASKS[:1] if a.quick else TASKS
    base = load_base(packaged_encoder_dir(), num_hidden_layers=layers)
    t0, rows, summary = time.time(), [], {}
    for name in tasks:
        c = load_corpus(name).subset(n_train)
        val, test = c.validation[:n_val], c.test[:n_test]
        gold = np.array([c.task.label_index(e.label) for e in test])
        for kind, (pcfg, lr) in RECIPES.items():
            cfg = TrainConfig(learning_rate=lr, epochs=epochs, batch_size=16, max_length=64, patience=2)
            run = train_prompts(base, c.task, c.train, val, 5, pcfg, cfg)
            run.model.eval()
            logits = batched_logits(run.model, run.names, test, Collator(base.tokenizer, c.task, 64), 32)
            per = logits.argmax(-1).numpy() == gold[:, None]  # [N, K] correct
            accs = per.mean(0)
            scores = [run.result.best_metrics[f"{n}/accuracy"] for n in run.names]
            row = {
                "task": name,
                "kind": kind,
                "prompts": [round(float(x), 4) for x in accs],
                "mean": round(float(accs.mean()), 4),
                "best": round(float(accs.max()), 4),
            }
            for strat in VOTING_RULES:
                labels = np.array([v.label for v in vote(logits, strat, scores)])
                row[strat] = round(float((labels == gold).mean()), 4)
                if strat == "majority":
                    lo, hi = bootstrap_ci(labels == gold, per.mean(1))
                    row["ci_majority_minus_mean"] = [round(lo, 4), round(hi, 4)]
            rows.append(row)
            summary[f"{name}_{kind}_majority_minus_mean"] = round(row["majority"] - row["mean"], 4)
            print(json.dumps(row), f"({time.time() - t0:.0f}s)", flush=True)
    (ROOT / "runs").mkdir(exist_ok=True)
    (ROOT / "runs" / "quality_prompts.json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"## Prompt-ensemble quality ({layers}-layer MiniLM, K=5, {n_train} training rows, test {n_test}"
        f"{', --quick' if a.quick else ''})",
        "",
        "| task | kind | prompts (test acc.) | mean | best (oracle) | majority | weighted | mean prob | mean logit "
        "| majority − mean, 95% CI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['kind']} | {', '.join(f'{x:.3f}' for x in r['prompts'])} | {r['mean']:.3f} | "
            f"{r['best']:.3f} | {r['majority']:.3f} | {r['weighted']:.3f} | {r['mean_prob']:.3f} | "
            f"{r['mean_logit']:.3f} | [{r['ci_majority_minus_mean'][0]:+.3f}, {r['ci_majority_minus_mean'][1]:+.3f}] |"
        )
    write_section("quality_prompts", "\n".join(lines))
    emit(summary)


if __name__ == "__main__":
    main()
