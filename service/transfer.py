"""Registry-driven transfer: rank the adapters a caller may read for a target task, and pick sources.

A ranking reads only the target task's training rows (at most `rows` of one train dataset, a seeded
sample) and, for SEmb, the training rows of each source's own task. Features are cached on disk under
the data directory (`features/`), keyed by the base, the adapter's weights and the rows, so a second
ranking of the same task, or a warm start after a ranking, recomputes nothing.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from composer import kinds
from composer.base import LoadedBase
from composer.data import Example
from composer.transfer import ESTIMATORS, FeatureModel, fusion_probe, logme, semb
from registry_db.errors import InvalidInput
from registry_db.models import Adapter, Dataset, Task
from registry_db.registry import Registry
from registry_db.repo import adapters as adapter_repo
from registry_db.repo import catalog, jobs
from service import artifact_store
from service.catalog import load_dataset_examples, task_spec
from service.settings import Settings

RANK_SEED = "rank"
SOURCE_ROWS = 256  # a source task's training rows embedded for SEmb
PROBE_ROWS = 256  # the target rows a fusion probe trains and reads attention on


@dataclass
class Candidate:
    row: Adapter
    task: Task
    # the dataset it was trained on (else its task's newest train split), for SEmb; None when the caller
    # does not own it (a public adapter of another owner is ranked on its features only)
    train: Dataset | None


@dataclass
class Ranking:
    task: Task
    base_model_id: str
    estimator: str
    rows_used: int
    items: list[dict[str, Any]]
    seconds: float
    baseline: float | None = None  # LogME of the bare base's features, the score a source must beat
    advice: str = ""

    def json(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "task_id": self.task.id,
            "base_model": self.base_model_id,
            "estimator": self.estimator,
            "rows_used": self.rows_used,
            "seconds": round(self.seconds, 3),
            "baseline": self.baseline,
            "advice": self.advice,
            "items": self.items,
        }


class FeatureCache:
    """Pooled features on disk, one safetensors file per (base, adapter weights or none, rows)."""

    def __init__(self, directory: Path, base: LoadedBase, precision: str = "auto"):
        self.dir = directory
        self.model = FeatureModel(base, precision=precision)
        self.base_key = base.identity.fingerprint

    def get(self, texts: list[str], adapter: Adapter | None, reg: Registry) -> torch.Tensor:
        h = hashlib.sha256(f"{self.base_key}|{adapter.blob_sha256 if adapter else '-'}".encode())
        h.update(f"|{self.model.max_length}|{self.model.precision}|".encode())
        for t in texts:
            h.update(t.encode() + b"\0")
        path = self.dir / f"{h.hexdigest()}.safetensors"
        if path.is_file():
            return load_file(path)["features"]
        art = artifact_store.fetch(reg, adapter) if adapter is not None else None
        feats = self.model.pooled(texts, art)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"features": feats.contiguous()}, str(tmp))
        tmp.replace(path)
        return feats


def _sample(examples: list[Example], n: int, key: str) -> list[Example]:
    rows = list(examples)
    random.Random(f"{RANK_SEED}/{key}").shuffle(rows)
    return rows[:n]


def target_rows(
    reg: Registry, owner_id: str, task_ref: str, rows: int, dataset: str | None
) -> tuple[Task, list[Example]]:
    """The target's training rows only: one train dataset (the named one, else the newest), sampled."""
    with reg.tx() as s:
        task = catalog.get_task(s, owner_id, task_ref)
        if dataset:
            ds = catalog.get_dataset(s, dataset, owner_id)
            if ds.task_id != task.id or ds.split != "train":
                raise InvalidInput(f"dataset {dataset} is not a train split of task {task.name!r}")
        else:
            page = catalog.list_datasets(s, owner_id, task.id, "train", limit=1)
            if not page.items:
                raise InvalidInput(f"task {task.name!r} has no train dataset to rank sources with; upload one first")
            ds = page.items[0]
    if task.kind != "classification":
        raise InvalidInput(f"task {task.name!r} is a {task.kind} task; ranking scores classification tasks")
    return task, _sample(load_dataset_examples(reg, ds, task), rows, ds.sha256)


def candidates(
    reg: Registry, owner_id: str, task: Task, base_model: str | None, exclude: frozenset[str] = frozenset()
) -> tuple[str, list[Candidate]]:
    """Every ready transfer source the caller may read, on one base, other than the task's own and those
    in `exclude` (adapter ids)."""
    with reg.tx() as s:
        rows, cursor = [], None
        while True:
            page = adapter_repo.list_adapters(s, owner_id, status="ready", limit=200, cursor=cursor)
            rows += [
                a for a in page.items if kinds.get(a.kind).rankable and a.task_id != task.id and a.id not in exclude
            ]
            cursor = page.next_cursor
            if not cursor:
                break
        if base_model:
            base_id = catalog.get_base_model(s, base_model, owner_id).id
        else:
            if not rows:
                raise InvalidInput("no ready adapters of other tasks to rank: the registry has no sources")
            base_id = Counter(a.base_model_id for a in rows).most_common(1)[0][0]
        rows = [a for a in rows if a.base_model_id == base_id]
        if not rows:
            raise InvalidInput(f"no ready adapters of other tasks on base model {base_id}: nothing to rank")
        out = []
        for a in rows:
            src_task = s.get(Task, a.task_id)
            train = None
            if src_task.owner_id != owner_id:  # another owner's public adapter: its data stays theirs
                out.append(Candidate(a, src_task, None))  # type: ignore[arg-type]
                continue
            if a.job_id:
                job = jobs.get_job(s, a.job_id)
                ref = (job.spec or {}).get("train_dataset")
                train = s.get(Dataset, ref) if ref else None
            if train is None:
                page = catalog.list_datasets(s, a.owner_id, a.task_id, "train", limit=1)
                train = page.items[0] if page.items else None
            out.append(Candidate(a, src_task, train))  # type: ignore[arg-type]
    return base_id, out


def _item(c: Candidate, score: float | None) -> dict[str, Any]:
    return {
        "adapter_id": c.row.id,
        "name": c.row.name,
        "version": c.row.version,
        "kind": c.row.kind,
        "source_task": c.task.name,
        "score": None if score is None else round(score, 6),
    }


BaseLoader = Callable[[Any], LoadedBase]  # a registered base row -> the loaded base (serving's resident one)


def rank(
    reg: Registry,
    settings: Settings,
    load_base: BaseLoader,
    owner_id: str,
    task_ref: str,
    estimator: str = "logme",
    rows: int = 1000,
    base_model: str | None = None,
    dataset: str | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Ranking:
    if estimator not in ESTIMATORS:
        raise InvalidInput(f"unknown estimator {estimator!r}; known: {list(ESTIMATORS)}")
    t0 = time.perf_counter()
    task, examples = target_rows(reg, owner_id, task_ref, rows, dataset)
    base_id, cands = candidates(reg, owner_id, task, base_model, exclude)
    with reg.tx() as s:
        base_row = catalog.get_base_model(s, base_id)
    base = load_base(base_row)
    cache = FeatureCache(Path(settings.data_dir) / "features", base, settings.rank_precision)
    texts = [e.text for e in examples]
    spec = task_spec(task)
    scores: list[float | None]
    baseline = None
    if estimator == "semb":
        target = cache.get(texts, None, reg)
        scores = []
        for c in cands:
            if c.train is None:
                scores.append(None)
                continue
            src = _sample(load_dataset_examples(reg, c.train, c.task), SOURCE_ROWS, c.train.sha256)
            scores.append(semb(target, [cache.get([e.text for e in src], None, reg)])[0])
    elif estimator == "logme":
        labels = torch.tensor([spec.label_index(e.label) for e in examples])
        baseline = round(logme(cache.get(texts, None, reg), labels), 6)
        scores = [logme(cache.get(texts, c.row, reg), labels) for c in cands]
    else:
        probe = examples[:PROBE_ROWS]
        arts = [artifact_store.fetch(reg, c.row) for c in cands]
        scores = list(fusion_probe(base, spec, probe, arts))  # type: ignore[arg-type]
    order = sorted(range(len(cands)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0)))
    items = [{"rank": r + 1, **_item(cands[i], scores[i])} for r, i in enumerate(order)]
    advice = ""
    if baseline is not None and items and (items[0]["score"] is None or items[0]["score"] <= baseline):
        advice = "no source helps: none scores above the bare base's own features; train cold"
    return Ranking(task, base_id, estimator, len(examples), items, time.perf_counter() - t0, baseline, advice)


def resolve_source(
    reg: Registry,
    settings: Settings,
    load_base: BaseLoader,
    owner_id: str,
    task_ref: str,
    ref: str,
    base_model: str,
    estimator: str,
    dataset: str | None = None,
) -> tuple[Adapter, dict[str, Any]]:
    """The adapter a warm start begins from (`ref`, or the top of a ranking for "auto") and its lineage."""
    if ref != "auto":
        with reg.tx() as s:
            row = adapter_repo.resolve_adapter(s, owner_id, ref)
        return row, {"from": row.id, "rank": None, "estimator": None}
    ranking = rank(reg, settings, load_base, owner_id, task_ref, estimator, base_model=base_model, dataset=dataset)
    top = ranking.items[0]
    with reg.tx() as s:
        row = adapter_repo.get_adapter(s, top["adapter_id"], owner_id)
    return row, {"from": row.id, "rank": 1, "estimator": estimator, "score": top["score"], "advice": ranking.advice}
