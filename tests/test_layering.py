"""Dependencies point one way: api -> workers -> composer; api, workers -> registry_db. Checked on imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "composer": {
        "sqlalchemy",
        "alembic",
        "celery",
        "kombu",
        "redis",
        "fastapi",
        "starlette",
        "registry_db",
        "workers",
        "api",
    },
    "registry_db": {"torch", "transformers", "safetensors", "composer", "workers", "api", "celery", "fastapi"},
    "workers": {"api", "fastapi"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_module_grows_past_400_lines():
    long = {}
    for pkg in ("composer", "registry_db", "workers", "api"):
        for f in (ROOT / pkg).rglob("*.py"):
            if "migrations/versions" in str(f):
                continue  # generated DDL
            n = len(f.read_text().splitlines())
            if n > 400:
                long[str(f.relative_to(ROOT))] = n
    assert long == {}
