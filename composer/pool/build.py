"""Build the pool's tasks with one set of rules (../shared/POOL.md): clean, cap, split, write JSONL.

    python -m composer.pool build [--max-rows 10000] [--only task,...]

Each task lands in `.assets/pool/<task>/{train,validation,test}.jsonl` with a `meta.json` (labels,
counts, domain, source archive). Randomness is string-seeded (`random.Random("pool/<task>/…")`), so
a task's splits do not depend on hash seeds or on which other tasks are built.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from composer.corpora import AssetsMissing, Corpus, assets_dir
from composer.data import Example, TaskSpec
from composer.pool.readers import READERS, Rows

MAX_CHARS = 2000
MIN_CHARS = 10
MIN_LABEL_ROWS = 20
SEED = "pool"


def pool_dir() -> Path:
    return assets_dir() / "pool"


def clean_text(text: str) -> str:
    """Whitespace collapsed, cut to MAX_CHARS at a word boundary."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > MAX_CHARS:
        cut = text[: MAX_CHARS + 1]
        text = cut[: cut.rfind(" ")] if " " in cut else cut[:MAX_CHARS]
    return text


def clean(rows: Rows) -> Rows:
    """Short texts dropped; a duplicate text kept once, or dropped entirely if its copies disagree;
    then labels with fewer than MIN_LABEL_ROWS rows dropped."""
    labels: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for text, label in rows:
        t = clean_text(text)
        if len(t) < MIN_CHARS:
            continue
        if t not in labels:
            order.append(t)
        labels[t].add(str(label))
    kept = [(t, next(iter(labels[t]))) for t in order if len(labels[t]) == 1]
    counts = Counter(label for _, label in kept)
    return [(t, label) for t, label in kept if counts[label] >= MIN_LABEL_ROWS]


def by_label(rows: Rows) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        out[label].append(text)
    return dict(sorted(out.items()))


def cap(task: str, rows: Rows, max_rows: int) -> Rows:
    """At most max_rows, subsampled per label so the label proportions are kept."""
    if len(rows) <= max_rows:
        return rows
    out = []
    for label, texts in by_label(rows).items():
        k = round(len(texts) * max_rows / len(rows))
        out += [(t, label) for t in random.Random(f"{SEED}/{task}/cap/{label}").sample(texts, k)]
    return out


def split(task: str, rows: Rows) -> dict[str, Rows]:
    """80/10/10 train/validation/test, stratified by label."""
    parts: dict[str, Rows] = {"train": [], "validation": [], "test": []}
    for label, texts in by_label(rows).items():
        texts = sorted(texts)
        random.Random(f"{SEED}/{task}/split/{label}").shuffle(texts)
        n_val = n_test = round(len(texts) * 0.1)
        parts["validation"] += [(t, label) for t in texts[:n_val]]
        parts["test"] += [(t, label) for t in texts[n_val : n_val + n_test]]
        parts["train"] += [(t, label) for t in texts[n_val + n_test :]]
    for name, part in parts.items():
        random.Random(f"{SEED}/{task}/order/{name}").shuffle(part)
    return parts


@dataclass(frozen=True)
class Built:
    task: str
    labels: dict[str, int]
    splits: dict[str, int]
    raw: int


def build_task(task: str, max_rows: int = 10_000, out: Path | None = None) -> Built:
    reader = READERS[task]
    raw = reader.read()
    rows = cap(task, clean(raw), max_rows)
    parts = split(task, rows)
    d = (out or pool_dir()) / task
    d.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with open(d / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for text, label in part:
                f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    labels = dict(Counter(label for _, label in rows).most_common())
    meta = {"task": task, "domain": reader.domain, "archive": reader.archive, "labels": labels, "raw": len(raw)}
    meta["splits"] = {k: len(v) for k, v in parts.items()}
    (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Built(task, labels, meta["splits"], len(raw))


def built_tasks(root: Path | None = None) -> list[str]:
    root = root or pool_dir()
    return sorted(p.parent.name for p in root.glob("*/meta.json")) if root.is_dir() else []


def load_pool_task(task: str, root: Path | None = None) -> Corpus:
    d = (root or pool_dir()) / task
    if not (d / "meta.json").is_file():
        raise AssetsMissing(f"pool task {task!r} is not built; run: python -m composer.pool build --only {task}")
    meta = json.loads((d / "meta.json").read_text())

    def read(name: str) -> list[Example]:
        with open(d / f"{name}.jsonl", encoding="utf-8") as f:
            return [Example(r["text"], r["label"]) for r in map(json.loads, f)]

    spec = TaskSpec(task, labels=tuple(sorted(meta["labels"])))
    return Corpus(spec, read("train"), read("validation"), read("test"))
