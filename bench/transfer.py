"""Does the registry pay? Leave-one-out over the real pool (../shared/POOL.md): each target task in turn,
with n training rows, and the other pool tasks' ST-As (trained by `adapterctl pool train`) as the registry.

    .venv/bin/python -m bench.transfer [--quick] [--data-dir /path/to/service/data] [--owner NAME]

Rows: majority; cold ST-A (3 seeds); warm start from a random source (the exact mean over every source,
which is the expectation of a random draw); warm start from the top-ranked source per estimator
(3 seeds); from the best source in hindsight (the oracle over every source, seed 0); full runs add a
fusion of the top 3 and of 3 random sources. Test accuracy and macro-F1, 95% intervals from a paired
bootstrap over test rows (differences to cold). Regret@k = (oracle − best of the top k) ÷ oracle.
Each run lands in bench/results/transfer_runs.json as it finishes; a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

from bench._transfer_report import report
from bench._transfer_runs import Budget, Runs, fusion_one, train_one
from composer.pool import load_pool_task
from composer.transfer import ESTIMATORS
from registry_db.errors import NotFound
from registry_db.models import Adapter, Task
from registry_db.repo import catalog
from service import artifact_store, transfer
from service.catalog import load_registered_base, upload_dataset
from service.settings import Settings, open_registry

TARGETS = (
    "vader_amazon",
    "drug_reviews",
    "rt_polarity",
    "conll_uncertainty",
    "conventions_party",
    "fortunes_topic",
    "election_tweets",
    "bbc_news",
)
QUICK_TARGETS = ("vader_amazon", "conll_uncertainty", "fortunes_topic")
RESULTS = Path(__file__).parent / "results" / "transfer_runs.json"


def pool_sources(reg, owner_id: str) -> dict[str, Adapter]:  # type: ignore[no-untyped-def]
    """The pool's ST-A per task (named pool-<task>), newest version."""
    with reg.tx() as s:
        rows = s.query(Adapter).filter(Adapter.owner_id == owner_id, Adapter.status == "ready").all()
        out = {}
        for a in sorted(rows, key=lambda a: a.version):
            if a.name.startswith("pool-"):
                out[a.name[len("pool-") :]] = a
        return out


def bench_task(reg, owner_id: str, target: str, n: int, rows) -> str:  # type: ignore[no-untyped-def]
    """A registry task holding only the n-row training subset, for the ranking to read."""
    name = f"bench-{target}-{n}"
    with reg.tx() as s:
        try:
            catalog.get_task(s, owner_id, name)
        except NotFound:
            catalog.create_task(s, owner_id, name, "classification", list(load_pool_task(target).task.labels))
    data = "".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in rows).encode()
    upload_dataset(reg, owner_id, name, "train", data, "train.jsonl")  # the same file twice is one dataset
    return name


def paired(diffs: list[list[tuple[int, int]]], draws: int = 1000) -> tuple[float, float, float]:
    """Mean over targets of (row − cold) accuracy, and a 95% paired bootstrap interval (test rows
    resampled within each target, the same rows for both)."""
    rng = random.Random(0)

    def mean(sample):  # type: ignore[no-untyped-def]
        return statistics.mean(statistics.mean(a - b for a, b in t) for t in sample)

    est = mean(diffs)
    boots = sorted(mean([rng.choices(t, k=len(t)) for t in diffs]) for _ in range(draws))
    return est, boots[int(0.025 * draws)], boots[int(0.975 * draws) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--sizes", default="", help="comma-separated training sizes (default: 100, or 100,500)")
    ap.add_argument("--targets", default="", help="comma-separated pool tasks (default: the fixed list)")
    a = ap.parse_args()
    quick = a.quick
    sizes = [int(x) for x in a.sizes.split(",") if x] or ([100] if quick else [100, 500])
    targets = tuple(x for x in a.targets.split(",") if x) or (QUICK_TARGETS if quick else TARGETS)
    b = (
        Budget(epochs=5, batch_size=16, max_length=64, validation=200, test=300)
        if quick
        else Budget(10, 16, 96, 300, 600)
    )
    seeds = (0, 1, 2)
    settings = Settings(data_dir=Path(a.data_dir))
    reg = open_registry(settings)
    with reg.tx() as s:
        owner_id = s.query(Task).filter(Task.name == targets[0]).one().owner_id
    sources = pool_sources(reg, owner_id)
    missing = [t for t in targets if t not in sources]
    if missing:
        raise SystemExit(f"pool adapters missing for {missing}: run `adapterctl pool train` first")
    with reg.tx() as s:
        base_row = catalog.get_base_model(s, next(iter(sources.values())).base_model_id)
    base = load_registered_base(base_row, "cpu", reg, settings.data_dir)
    arts = {t: artifact_store.fetch(reg, row) for t, row in sources.items()}
    runs = Runs(RESULTS.with_name("transfer_runs_quick.json" if quick else RESULTS.name))
    per: dict[tuple[str, int], dict] = {}
    rank_seconds: dict[str, float] = {}
    t_start = time.perf_counter()
    for target in targets:
        corpus = load_pool_task(target)
        own = sources[target].id
        others = [t for t in sources if t != target]
        for n in sizes:
            rows = list(corpus.train)
            random.Random(f"bench-transfer/{target}/{n}").shuffle(rows)
            task_name = bench_task(reg, owner_id, target, n, rows[:n])
            ranked = {}
            for e in ESTIMATORS:
                r = transfer.rank(reg, settings, lambda _row: base, owner_id, task_name, e, exclude=frozenset({own}))
                ranked[e] = {"order": [i["source_task"] for i in r.items], "advice": r.advice, "seconds": r.seconds}
            cold = [runs.get(f"{target}/{n}/cold/{s}", train_one, base, corpus, n, s, b) for s in seeds]
            warm = {
                src: runs.get(f"{target}/{n}/warm:{src}/0", train_one, base, corpus, n, 0, b, arts[src])
                for src in others
            }
            top1 = {}
            for e in ESTIMATORS:
                src = ranked[e]["order"][0]
                top1[e] = [warm[src]] + [
                    runs.get(f"{target}/{n}/warm:{src}/{s}", train_one, base, corpus, n, s, b, arts[src])
                    for s in seeds[1:]
                ]
            test = corpus.test[: b.test]
            majority = Counter(e.label for e in test).most_common(1)[0][1] / len(test)
            entry = {"cold": cold, "warm": warm, "top1": top1, "ranked": ranked, "majority": majority}
            if not quick:
                own_art = train_one(base, corpus, n, 0, b, keep=True)["artifact"]
                top3 = ranked["logme"]["order"][:3]
                rnd3 = random.Random(f"bench-transfer/{target}/rnd3").sample(others, 3)
                for key, chosen in (("fusion_top3", top3), ("fusion_rnd3", rnd3)):
                    entry[key] = runs.get(
                        f"{target}/{n}/fusion:{'+'.join(chosen)}",
                        fusion_one,
                        base,
                        corpus,
                        n,
                        own_art,
                        [arts[t] for t in chosen],
                        b,
                    )
            per[(target, n)] = entry
            print(f"{target} n={n}: done at {time.perf_counter() - t_start:.0f} s", flush=True)
    # the ranking budget: 1,000 rows against every pool adapter, features not cached yet
    t = targets[0]
    corpus = load_pool_task(t)
    rows = list(corpus.train)
    random.Random(f"bench-transfer/{t}/1000").shuffle(rows)
    name = bench_task(reg, owner_id, t, 1000, rows[:1000])
    fresh = Settings(data_dir=Path(a.data_dir) / f"rank-budget-{time.time_ns()}")
    for e in ESTIMATORS:
        r = transfer.rank(reg, fresh, lambda _row: base, owner_id, name, e, exclude=frozenset({sources[t].id}))
        rank_seconds[e] = round(r.seconds, 1)
    default = QUICK_TARGETS if quick else TARGETS
    section = "" if tuple(targets) == default else f"transfer_{'quick_' if quick else ''}{len(targets)}_targets"
    report(per, sizes, targets, quick, rank_seconds, len(sources) - 1, paired, section)


if __name__ == "__main__":
    main()
