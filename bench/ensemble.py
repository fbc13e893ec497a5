"""P2: a K=5 prompt ensemble against one prompt, on the real MiniLM (6 layers), prompt length 20, seq 64.

Side by side in one process, through the serving runtime (one prompt; the ensemble, whose plan the runtime
chooses at B >= 8; with exact early exit) and the forward alone (K sequential forwards; the K batched forward);
and the batched forward with exact early exit, on RT polarity rows with prompts trained here until the top
three agree on most rows (the premise of the early-exit target).

    .venv/bin/python -m bench.ensemble [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from bench.common import alternating, emit, write_section
from composer import kinds
from composer.base import load_base, packaged_encoder_dir
from composer.corpora import load_corpus
from composer.data import Collator
from composer.prompts.ensemble import predict_ensemble
from composer.prompts.prompt import PromptConfig
from composer.prompts.training import train_prompts
from composer.serving import Runtime
from composer.training import Callback, TrainConfig

K, LENGTH, SEQ = 5, 20, 64
PROMPT = kinds.get("soft_prompt")


AGREE, MAX_EPOCHS = 0.70, 8


class LastCheckpoint(Callback):
    """Keeps the training loop's last checkpoint, to train on from it."""

    payload: bytes | None = None

    def on_checkpoint(self, step: int, payload: bytes) -> None:
        self.payload = payload


def top3_agreement(model, names: list[str], scores: list, rows: list, collate: Collator) -> float:  # type: ignore[no-untyped-def,type-arg]
    """The share of rows on which the three best prompts (by validation score) give the same label."""
    order = sorted(range(len(names)), key=lambda j: -(scores[j] or 0))[:3]
    agree = 0
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            batch = {k: v for k, v in collate(rows[i : i + 32]).items() if k != "labels"}
            labels = model.logits(names, batch).argmax(-1)  # [B, K]
            agree += int((labels[:, order] == labels[:, order[:1]]).all(-1).sum())
    return agree / len(rows)


def runtime_ratios(base, arts: list, rows: list, scores: list, rounds: dict[int, int]) -> dict[str, float | str]:  # type: ignore[type-arg]
    """Through the serving runtime, as /v1/predict and the ensemble endpoint run them: one prompt, the K=5
    ensemble (the runtime picks batched, sequential or chunked at B >= 8 by measuring), and with early exit.
    Each round takes the next B test rows and times the three side by side; a ratio is the ensemble's total
    time over one prompt's, so early exit is charged for the rows it cannot decide early, as a user is."""
    rt = Runtime()
    res = rt.resident("minilm", lambda: base)
    names = [a.name for a in arts]
    for a in arts:
        rt.ensure(res, "minilm", a.name, PROMPT, lambda a=a: a)
    out: dict[str, float | str] = {}
    for b in (1, 8, 32):
        batches = [[rows[(r * b + i) % len(rows)] for i in range(b)] for r in range(rounds[b])]
        for _ in range(4):  # let the planner try each plan on these shapes before timing
            for inputs in batches[:2]:
                for early in (False, True):
                    rt.predict_ensemble(res, names, inputs, "majority", scores, early)
        total = {"single": 0.0, "full": 0.0, "early": 0.0}
        for rnd, inputs in enumerate(batches):
            single = [(names[0], e) for e in inputs]
            runs = {
                "single": lambda single=single: rt.predict(res, single),
                "full": lambda i=inputs: rt.predict_ensemble(res, names, i, "majority", scores, False),
                "early": lambda i=inputs: rt.predict_ensemble(res, names, i, "majority", scores, True),
            }
            for name, t in alternating(runs, rnd, repeats=3 if b == 1 else 1).items():
                total[name] += t
        out[f"ensemble_b{b}_over_single"] = round(total["full"] / total["single"], 3)
        out[f"ensemble_ee_b{b}_over_single"] = round(total["early"] / total["single"], 3)
    out["plans_chosen"] = json.dumps(rt.ensemble_plans.chosen(), sort_keys=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    base = load_base(packaged_encoder_dir(), device="cpu")
    corpus = load_corpus("rt_polarity").subset(96 if a.quick else 2000)
    collate = Collator(base.tokenizer, corpus.task, SEQ)
    # Trained until the top three prompts agree on AGREE of held-out validation rows (the premise for
    # early exit): three epochs, then one more at a time (resumed from the last checkpoint), up to MAX_EPOCHS.
    held_out = corpus.validation[64:320]
    epochs, resume, agreement_by_epoch = (1 if a.quick else 3), None, []
    while True:
        cfg = TrainConfig(learning_rate=0.3, epochs=epochs, batch_size=16, max_length=SEQ, patience=0, seed=1)
        keep = LastCheckpoint()
        run = train_prompts(
            base,
            corpus.task,
            corpus.train,
            corpus.validation[:64],
            K,
            PromptConfig(length=LENGTH),
            cfg,
            callbacks=[keep],
            resume=resume,
        )
        scores = [run.result.best_metrics.get(f"{n}/accuracy") for n in run.names]
        agreement_by_epoch.append(top3_agreement(run.model.eval(), run.names, scores, held_out, collate))
        if a.quick or agreement_by_epoch[-1] >= AGREE or epochs >= MAX_EPOCHS:
            break
        epochs, resume = epochs + 1, keep.payload
    model = run.model.eval()
    names = run.names
    rows = corpus.test[:256]
    rounds = {1: 8 if a.quick else 24, 8: 3 if a.quick else 8, 32: 2 if a.quick else 5}
    res: dict[str, float | str] = {}
    with torch.no_grad():
        for b in (1, 8, 32):  # the forward alone, on the first B test rows: median over alternating rounds
            batch = {k: v for k, v in collate(rows[:b]).items() if k != "labels"}
            runs = {
                "single": lambda batch=batch: model.logits(names[:1], batch),
                "sequential": lambda batch=batch: [model.logits([n], batch) for n in names],
                "batched": lambda batch=batch: model.logits(names, batch),
            }
            if b == 32:
                runs["full"] = lambda batch=batch: predict_ensemble(model, names, batch, "majority", scores)
                runs["early"] = lambda batch=batch: predict_ensemble(model, names, batch, "majority", scores, True)
            per_round = [alternating(runs, rnd, repeats=3) for rnd in range(3 if a.quick else 5)]

            def ratio(x: str, y: str) -> float:
                return round(statistics.median(t[x] / t[y] for t in per_round), 3)  # noqa: B023

            res[f"single_ms_b{b}"] = round(statistics.median(t["single"] for t in per_round), 2)
            res[f"sequential_over_single_b{b}"] = ratio("sequential", "single")
            res[f"batched_over_single_b{b}"] = ratio("batched", "single")
            if b == 32:
                res["early_exit_over_batched"] = ratio("early", "full")
                res["ensemble_over_single_b32"] = ratio("early", "single")
        mismatches, decided = 0, 0
        for i in range(0, len(rows), 32):
            batch = {k: v for k, v in collate(rows[i : i + 32]).items() if k != "labels"}
            full = predict_ensemble(model, names, batch, "majority", scores)
            fast = predict_ensemble(model, names, batch, "majority", scores, early_exit=True)
            mismatches += sum(x.label != y.label for x, y in zip(full, fast, strict=True))
            decided += sum(y.early_exit for y in fast)
        res |= runtime_ratios(base, run.artifacts(corpus.task), rows, scores, rounds)
    res["early_exit_label_mismatches"] = mismatches
    res["early_exit_decided_share"] = round(decided / len(rows), 3)
    res["top3_agreement"] = round(top3_agreement(model, names, scores, rows, collate), 3)
    res["prompt_epochs"] = epochs
    res["top3_agreement_held_out"] = json.dumps([round(x, 3) for x in agreement_by_epoch])
    lines = [
        f"## P2: prompt ensemble, K=5, prompt length 20, seq ≤ 64, 6-layer MiniLM, 2 threads{' (--quick)' if a.quick else ''}",
        "",
        "Through the serving runtime (tokenise, forward, vote; the runtime picks the plan at B ≥ 8 by measuring),",
        f"over {rounds[1]}, {rounds[8]} and {rounds[32]} rounds of the next B test rows, timed side by side (total ÷ total):",
        "",
        "| B | ensemble ÷ one prompt | with exact early exit ÷ one prompt |",
        "|---|---|---|",
        *[
            f"| {b} | {res[f'ensemble_b{b}_over_single']} | {res[f'ensemble_ee_b{b}_over_single']} |"
            for b in (1, 8, 32)
        ],
        "",
        f"Plans the runtime chose (K, B bucket, T bucket, early exit): `{res['plans_chosen']}`.",
        "",
        "The forward alone (`PromptModel.logits`, fixed plans; median of alternating rounds on the first B test rows):",
        "",
        "| B | K sequential ÷ single | K batched ÷ single |",
        "|---|---|---|",
        *[f"| {b} | {res[f'sequential_over_single_b{b}']} | {res[f'batched_over_single_b{b}']} |" for b in (1, 8, 32)],
        "",
        f"Prompts trained {epochs} epoch(s) on {len(corpus.train)} RT-polarity rows, until the top three agreed on "
        f"{AGREE:.0%} of {len(held_out)} held-out validation rows (after each epoch from the third: "
        f"{res['top3_agreement_held_out']}); on {len(rows)} test rows the top three",
        f"agreed on **{res['top3_agreement']:.0%}** of rows and {res['early_exit_decided_share']:.0%} were decided after three",
        f"prompts; early exit at B=32 costs {res['early_exit_over_batched']}× the full batched forward, label mismatches",
        f"against the full vote: {mismatches}. Targets: ensemble ÷ one prompt ≤ 3.0× at B=1; with early exit ≤ 3.6× at B=32.",
    ]
    write_section("ensemble", "\n".join(lines))
    emit(res)


if __name__ == "__main__":
    main()
