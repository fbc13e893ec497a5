"""`python -m registry_db migrate` and `python -m registry_db gc [--dry-run] [--min-age SECONDS]`."""

from __future__ import annotations

import argparse

from registry_db.migrate import upgrade
from registry_db.registry import Registry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="registry_db")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="alembic upgrade head on COMPOSER_DATABASE_URL")
    gc = sub.add_parser("gc", help="delete blobs that no row references")
    gc.add_argument("--dry-run", action="store_true")
    gc.add_argument("--min-age", type=float, default=3600.0, help="keep blobs younger than this (seconds)")
    a = p.parse_args(argv)
    if a.cmd == "migrate":
        upgrade()
        print("registry migrated to head")
        return 0
    reg = Registry.from_env()
    removed = reg.gc(min_age_seconds=a.min_age, dry_run=a.dry_run)
    verb = "would remove" if a.dry_run else "removed"
    print(f"{verb} {len(removed)} unreferenced blob(s) from {reg.blobs.describe()}")
    for sha in removed:
        print(" ", sha)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
