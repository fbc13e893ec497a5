"""P2: a K=5 prompt ensemble against one prompt, on the real MiniLM (6 layers), prompt length 20, seq 64.

Side by side in one process: one prompt; K sequential forwards; the K batched forward (B×K rows);
and the batched forward with exact early exit, on RT polarity rows with prompts trained briefly here.

    .venv/bin/python -m bench.ensemble [--quick]
"""

from __future__ import annotations

import argparse

import torch

from bench.common import emit, time_ms, write_section
from composer.base import load_base, packaged_encoder_dir
from composer.corpora import load_corpus
from composer.data import Collator
from composer.prompts.ensemble import predict_ensemble
from composer.prompts.prompt import PromptConfig
from composer.prompts.training import train_prompts
from composer.training import TrainConfig

K, LENGTH, SEQ = 5, 20, 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    base = load_base(packaged_encoder_dir(), device="cpu")
    corpus = load_corpus("rt_polarity").subset(96 if a.quick else 512)
    cfg = TrainConfig(learning_rate=0.3, epochs=1, batch_size=16, max_length=SEQ, patience=0, seed=1)
    run = train_prompts(base, corpus.task, corpus.train, corpus.validation[:64], K, PromptConfig(length=LENGTH), cfg)
    model = run.model.eval()
    names = run.names
    scores = [run.result.best_metrics.get(f"{n}/accuracy") for n in names]
    collate = Collator(base.tokenizer, corpus.task, SEQ)
    rows = corpus.test[:256]
    reps = {1: 6 if a.quick else 20, 8: 3 if a.quick else 8, 32: 2 if a.quick else 4}
    res: dict[str, float] = {}
    with torch.no_grad():
        for b in (1, 8, 32):
            batch = {k: v for k, v in collate(rows[:b]).items() if k != "labels"}
            single = time_ms(lambda batch=batch: model.logits(names[:1], batch), reps[b])
            seq = time_ms(lambda batch=batch: [model.logits([n], batch) for n in names], reps[b])
            batched = time_ms(lambda batch=batch: model.logits(names, batch), reps[b])
            res[f"single_ms_b{b}"] = round(single, 2)
            res[f"sequential_over_single_b{b}"] = round(seq / single, 3)
            res[f"batched_over_single_b{b}"] = round(batched / single, 3)
            if b == 32:
                early = time_ms(
                    lambda batch=batch: predict_ensemble(model, names, batch, "majority", scores, True), reps[b]
                )
                full = time_ms(lambda batch=batch: predict_ensemble(model, names, batch, "majority", scores), reps[b])
                res["early_exit_over_batched"] = round(early / full, 3)
                res["ensemble_over_single_b32"] = round(early / single, 3)
        mismatches, decided, agree3 = 0, 0, 0
        order = sorted(range(K), key=lambda j: -(scores[j] or 0))
        for i in range(0, len(rows), 32):
            batch = {k: v for k, v in collate(rows[i : i + 32]).items() if k != "labels"}
            full = predict_ensemble(model, names, batch, "majority", scores)
            fast = predict_ensemble(model, names, batch, "majority", scores, early_exit=True)
            mismatches += sum(x.label != y.label for x, y in zip(full, fast, strict=True))
            decided += sum(y.early_exit for y in fast)
            agree3 += sum(len({r.per_prompt[j][0] for j in order[:3]}) == 1 for r in full)  # type: ignore[index]
    res["early_exit_label_mismatches"] = mismatches
    res["early_exit_decided_share"] = round(decided / len(rows), 3)
    res["top3_agreement"] = round(agree3 / len(rows), 3)
    lines = [
        f"## P2: prompt ensemble, K=5, prompt length 20, seq 64, 6-layer MiniLM, 2 threads{' (--quick)' if a.quick else ''}",
        "",
        "| B | K sequential ÷ single | K batched ÷ single |",
        "|---|---|---|",
        *[f"| {b} | {res[f'sequential_over_single_b{b}']} | {res[f'batched_over_single_b{b}']} |" for b in (1, 8, 32)],
        "",
        f"Early exit (majority, exact) at B=32 on {len(rows)} RT-polarity test rows: {res['early_exit_over_batched']}× the full",
        f"batched cost; a K=5 ensemble with early exit costs {res['ensemble_over_single_b32']}× one prompt. The top three",
        f"prompts agreed on {res['top3_agreement']:.0%} of rows; {res['early_exit_decided_share']:.0%} were decided after three",
        f"prompts; label mismatches against the full vote: {mismatches}. Targets: batched ÷ single ≤ 3.0× at B=1;",
        "early exit ≤ 0.7× of batched at B=32; ensemble with early exit ≤ 3.6× one prompt at B=32.",
    ]
    write_section("ensemble", "\n".join(lines))
    emit(res)


if __name__ == "__main__":
    main()
