"""An int8 base against the fp32 base on the CPU, side by side in one process (composer/quantize.py).

Speed, throughput of the int8 base ÷ the fp32 base on the real MiniLM (6 layers), batches of 8 texts:
- `int8_over_fp32_single`: one ST-A; `int8_over_fp32_fuse8`: a fusion of 8 ST-As; `int8_over_fp32_mixed8`: 8 rows
  on 8 kinds (as bench/kinds). Goal ≥ 1.6 each. Median over rounds of alternating runs; spread in the table.
Accuracy, on 5 real tasks (DATA.md's RT polarity, RT subjectivity, fine foods, CoNLL uncertainty, and the pool's
  vader_amazon): an ST-A and its head trained on the fp32 base, tested on both precisions (the same files).
  `int8_accuracy_drop`: the mean drop, a fraction (goal ≤ 0.005), and the largest logit difference.
Also an ST-A trained on the int8 base and one trained on the NF4 base (QLoRA's 4-bit NormalFloat, composer/nf4.py),
tested on both serving precisions (`int8_trained_accuracy_drop`, `nf4_trained_accuracy_drop`: goal within 0.01),
and a LoRA's training step time and peak RSS on each base.

    .venv/bin/python -m bench.int8 [--quick]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from bench.common import alternating, emit, write_section
from bench.kinds import MODULES, TEXTS, add_modules
from composer import adapter_artifact as artifacts
from composer.adapter_training import predict_logits, train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.composition import BatchSplit, Fuse, Single
from composer.corpora import load_corpus
from composer.data import Collator
from composer.diff.kernel import KERNEL
from composer.encoder import AdaptedEncoder
from composer.fusion.modules import FusionConfig
from composer.pool import load_pool_task
from composer.presets import preset
from composer.training import TrainConfig

TASKS = ("rt_polarity", "rt_subjectivity", "fine_foods", "conll_uncertainty", "vader_amazon")


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def kernel_used() -> str:
    """Which int8 matmul this process serves with (`composer.quantize`)."""
    from composer.quantize import ONEDNN

    if ONEDNN.available():
        return "oneDNN's int8 linear on packed weights (`composer.quantize.ONEDNN`)"
    return (
        "`torch._int_mm`: oneDNN's int8 linear is absent, not exact, or runs its far slower reference kernel on this "
        "CPU (`composer.quantize.fast`)"
    )


def corpus(name: str):  # type: ignore[no-untyped-def]
    try:
        return load_corpus(name)
    except KeyError:
        return load_pool_task(name)


def speed_models() -> dict[str, AdaptedEncoder]:
    """fp32 and int8 models holding the same modules: 8 ST-As and their fusion, and one module per kind."""
    models = {}
    for precision in ("fp32", "int8"):
        torch.manual_seed(0)  # the same draws on both: the same modules
        model = AdaptedEncoder(load_base(packaged_encoder_dir(), device="cpu", precision=precision)).eval()
        for i in range(8):
            model.add_adapter(f"a{i}", preset("seq_bn"))
        model.add_fusion("fuse8", [f"a{i}" for i in range(8)], FusionConfig(dropout=0.0))
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.02)
        add_modules(model)
        models[precision] = model
    own = {k: v for k, v in models["fp32"].state_dict().items() if not k.startswith("encoder.")}
    theirs = models["int8"].state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in own.items())
    return models


def speed(rounds: int, repeats: int, texts: list[str], max_length: int) -> tuple[dict, dict]:
    models = speed_models()
    tok = models["fp32"].base.tokenizer
    batch = dict(tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    setups = {"single": Single("a0"), "fuse8": Fuse("fuse8"), "mixed8": BatchSplit((*MODULES, None))}

    def run(model, comp):  # type: ignore[no-untyped-def]
        def go() -> None:
            with torch.inference_mode():  # as the serving runtime runs a forward
                model(**batch, composition=comp)

        return go

    runs = {f"{s}_{p}": run(models[p], c) for s, c in setups.items() for p in models}
    samples: dict[str, list[float]] = {n: [] for n in runs}
    for r in range(rounds):
        for n, ms in alternating(runs, r, repeats).items():
            samples[n].append(ms)
    out, spread = {}, {}
    for s in setups:
        per_round = [a / b for a, b in zip(samples[f"{s}_fp32"], samples[f"{s}_int8"], strict=True)]
        out[f"int8_over_fp32_{s}"] = round(statistics.median(per_round), 3)
        spread[s] = (round(min(per_round), 3), round(max(per_round), 3), statistics.median(samples[f"{s}_fp32"]))
    real = batch["attention_mask"].unsqueeze(-1).bool()  # padding positions are masked out of every answer
    with torch.no_grad():
        diff = max(
            (models["fp32"](**batch, composition=c).hidden - models["int8"](**batch, composition=c).hidden)
            .abs()
            .masked_select(real)
            .max()
            for c in setups.values()
        )
    out["int8_hidden_max_abs_diff"] = round(float(diff), 3)
    return out, spread


def accuracy(quick: bool) -> tuple[dict, list[str]]:
    n, test_n, epochs = (400, 300, 2) if quick else (2000, 1000, 3)
    bases = {p: load_base(packaged_encoder_dir(), device="cpu", precision=p) for p in ("fp32", "int8", "nf4")}
    serving = {p: bases[p] for p in ("fp32", "int8")}  # nf4 is a base to train on
    rows, drops, qlora, nf4 = [], [], [], []
    out: dict = {}
    for t in TASKS:
        c = corpus(t).subset(n, seed=0)
        cfg = TrainConfig(learning_rate=1e-3, epochs=epochs, batch_size=32, max_length=64, patience=2)
        test = c.test[:test_n]
        gold = torch.tensor([c.task.labels.index(r.label) for r in test])
        acc: dict[str, dict[str, float]] = {}
        logit_gap = 0.0
        for trained_on in bases:
            run = train_st_adapter(bases[trained_on], c.task, c.train, c.validation[:200], preset("seq_bn"), cfg)
            art = run.artifact(c.task)
            acc[trained_on] = {}
            logits = {}
            for served_on, base in serving.items():
                model = AdaptedEncoder(base).eval()
                name = artifacts.attach(model, art, name="m")
                collate = Collator(base.tokenizer, c.task, 64)
                logits[served_on] = predict_logits(model, name, test, collate, composition=Single(name))
                acc[trained_on][served_on] = float((logits[served_on].argmax(-1) == gold).float().mean())
            if trained_on == "fp32":
                logit_gap = float((logits["fp32"] - logits["int8"]).abs().max())
        drop = acc["fp32"]["fp32"] - acc["fp32"]["int8"]
        drops.append(drop)
        qlora.append(acc["fp32"]["fp32"] - acc["int8"]["int8"])
        nf4.append(acc["fp32"]["fp32"] - acc["nf4"]["fp32"])
        out[f"{t}_fp32"], out[f"{t}_int8"] = round(acc["fp32"]["fp32"], 4), round(acc["fp32"]["int8"], 4)
        rows.append(
            f"| {t} | {acc['fp32']['fp32']:.3f} | {acc['fp32']['int8']:.3f} | {drop * 100:+.1f} | {logit_gap:.3f} | "
            f"{acc['int8']['int8']:.3f} | {acc['int8']['fp32']:.3f} | {acc['nf4']['fp32']:.3f} | {acc['nf4']['int8']:.3f} |"
        )
        print(rows[-1], flush=True)
    out["int8_accuracy_drop"] = round(statistics.mean(drops), 4)
    out["int8_trained_accuracy_drop"] = round(statistics.mean(qlora), 4)
    out["nf4_trained_accuracy_drop"] = round(statistics.mean(nf4), 4)
    return out, rows


TRUE_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc: large blocks mapped and unmapped, none kept


def training_cost(steps: int, rounds: int) -> dict:
    """A LoRA's training step time and the process's peak RSS on each precision, each run in its own process
    (alternating), medians over the rounds; and the peak RSS once more with glibc's large blocks never kept
    (`TRUE_RSS_ENV`): what the process holds, without what the allocator keeps of its freed transients."""
    import json
    import os
    import subprocess
    import sys

    runs = {(p, env): [] for p in ("fp32", "int8", "nf4") for env in ("default", "true")}  # type: ignore[var-annotated]
    for _ in range(rounds):
        for p, env in runs:
            out = subprocess.run(
                [sys.executable, "-m", "bench._int8_train", p, str(steps)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, **(TRUE_RSS_ENV if env == "true" else {})},
            )
            runs[p, env].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    return {
        "train_step_ms_fp32": med["fp32", "default"]["step_ms"],
        "train_step_ms_int8": med["int8", "default"]["step_ms"],
        "train_peak_rss_mb_fp32": med["fp32", "default"]["peak_rss_mb"],
        "train_peak_rss_mb_int8": med["int8", "default"]["peak_rss_mb"],
        "train_held_rss_mb_fp32": med["fp32", "true"]["peak_rss_mb"],
        "train_held_rss_mb_int8": med["int8", "true"]["peak_rss_mb"],
        "train_step_ms_nf4": med["nf4", "default"]["step_ms"],
        "train_peak_rss_mb_nf4": med["nf4", "default"]["peak_rss_mb"],
        "train_held_rss_mb_nf4": med["nf4", "true"]["peak_rss_mb"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    KERNEL.load()  # the diff row's kernel loaded before timing (a serving process loads it in the background)
    rounds, repeats = (5, 5) if a.quick else (11, 15)
    reviews = [r.text for r in load_corpus("fine_foods").test[:8]]  # real inputs: product reviews, up to 128 tokens
    fast, spread = speed(rounds, repeats, reviews, 128)
    short, short_spread = speed(rounds, repeats, TEXTS, 128)  # bench/kinds' short sentences (~12 tokens)
    fast.update({f"short_{k}": v for k, v in short.items()})
    print(fast, flush=True)
    acc, rows = accuracy(a.quick)
    train = training_cost(12 if a.quick else 40, 2 if a.quick else 3)
    result = {**fast, **acc, **train}
    lines = [
        f"## An int8 base on the CPU ({'--quick, ' if a.quick else ''}6-layer MiniLM, 2 threads)",
        "",
        "| batch of 8 rows | fp32 ms | int8 ÷ fp32 throughput (rounds) | short sentences: fp32 ms | int8 ÷ fp32 |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {s} | {spread[s][2]:.2f} | **{fast[f'int8_over_fp32_{s}']}** ({spread[s][0]}–{spread[s][1]}) | "
            f"{short_spread[s][2]:.2f} | {fast[f'short_int8_over_fp32_{s}']} |"
            for s in spread
        ),
        "",
        "Goal ≥ 1.6 each. Inputs: 8 product reviews of the fine-foods test set (up to 128 tokens), and bench/kinds' "
        "8 short sentences (about 12 tokens), where attention, LayerNorms and the fp32 adapters weigh more. Largest "
        f"hidden-state difference int8 − fp32 over the real tokens (padding aside): reviews "
        f"{fast['int8_hidden_max_abs_diff']}, short sentences {fast['short_int8_hidden_max_abs_diff']}. CPU: "
        f"{cpu_name()}. The int8 matmuls run {kernel_used()}. On an AMX CPU (the --quick run before, an Intel "
        "Xeon) oneDNN's int8 linear read 1.8, 1.647 and 1.701 on the reviews, and `torch._int_mm` there (oneDNN's "
        "older GEMM, no AMX) 1.52, 1.40 and 1.56.",
        "",
        "| task | trained fp32, served fp32 | served int8 | drop (points) | max logit diff | trained int8, "
        "served int8 | served fp32 | trained nf4, served fp32 | served int8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Mean accuracy drop serving on int8: **{acc['int8_accuracy_drop'] * 100:.2f} points** (goal ≤ 0.5); "
        f"an ST-A trained on the int8 base and served there: {acc['int8_trained_accuracy_drop'] * 100:.2f} "
        f"points under the fp32-trained one on fp32 (goal within 1); trained on the NF4 base (QLoRA's 4-bit "
        f"NormalFloat) and served on fp32: {acc['nf4_trained_accuracy_drop'] * 100:.2f} points under it. ST-A "
        "(seq_bn) on each task's first "
        f"{'400' if a.quick else '2,000'} training rows, one seed; test on {'300' if a.quick else '1,000'} rows.",
        "",
        f"Training a LoRA (batch 32, 64 tokens), each precision in its own process: step "
        f"{train['train_step_ms_fp32']:.0f} ms on fp32, {train['train_step_ms_int8']:.0f} ms on int8, "
        f"{train['train_step_ms_nf4']:.0f} ms on NF4; peak RSS {train['train_peak_rss_mb_fp32']:.0f}, "
        f"{train['train_peak_rss_mb_int8']:.0f} and {train['train_peak_rss_mb_nf4']:.0f} MB. With glibc keeping "
        "no large freed block (`MALLOC_MMAP_THRESHOLD_=131072`, which shows what each process holds but slows its "
        f"steps by half or more, so it is no default): {train['train_held_rss_mb_fp32']:.0f}, "
        f"{train['train_held_rss_mb_int8']:.0f} and {train['train_held_rss_mb_nf4']:.0f} MB. The quantised bases "
        "release their linears' fp32 weights (int8 keeps about 5/16 of those bytes: a quarter, "
        "and the fused query/key/value also their plain int8 form; NF4 about an eighth: 4.127 bits a parameter, with QLoRA's double quantisation) and a training process builds no compiled kernels; on this MiniLM those weights are 42 MB "
        "(10.6M parameters; BERT-base's 85M are 340 MB), beside the activations of a batch of 32, which dominate "
        "here, and the default allocator keeps more of the quantised paths' transients (int32 products, the "
        "weights dequantised for each forward and backward).",
    ]
    write_section("int8", "\n".join(lines))
    emit(result)


if __name__ == "__main__":
    main()
