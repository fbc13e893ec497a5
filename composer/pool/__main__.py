"""`python -m composer.pool build`: build the pool's tasks from the archives in .assets/."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from composer.corpora import AssetsMissing
from composer.pool.archives import POOL_ARCHIVES, archive_path
from composer.pool.build import build_task, pool_dir
from composer.pool.readers import READERS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m composer.pool")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write .assets/pool/<task>/{train,validation,test}.jsonl")
    b.add_argument("--max-rows", type=int, default=10_000)
    b.add_argument("--only", default="", help="comma-separated task ids (default: every task)")
    args = p.parse_args(argv)
    tasks = [t for t in args.only.split(",") if t] or list(READERS)
    unknown = sorted(set(tasks) - set(READERS))
    if unknown:
        p.error(f"unknown pool tasks {unknown}; known: {sorted(READERS)}")
    missing: dict[str, str] = {}
    for t in tasks:
        try:
            archive_path(READERS[t].archive)
        except AssetsMissing:
            missing[t] = POOL_ARCHIVES[READERS[t].archive].filename
    todo = [t for t in tasks if t not in missing]
    for t in (bar := tqdm(todo, unit="task")):
        bar.set_description(t)
        built = build_task(t, args.max_rows)
        tqdm.write(f"{t}: {sum(built.labels.values())} rows ({built.raw} raw), {built.splits}, labels {built.labels}")
    for t, f in missing.items():
        print(f"SKIPPED {t}: archive {f} is not in .assets (python scripts/fetch_assets.py --pool)", file=sys.stderr)
    print(f"{len(todo)} pool tasks built in {pool_dir()}; {len(missing)} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
