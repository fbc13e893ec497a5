"""Dependencies point one way: `cli` -> `api`, `workers` -> `service` -> `registry_db`, `composer`; `api` reaches
`workers` only to enqueue (`workers.queueing`) and uses `composer` for serving. Checked on imports."""

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
        "service",
        "workers",
        "api",
        "cli",
    },
    "registry_db": {
        "torch",
        "transformers",
        "safetensors",
        "composer",
        "service",
        "workers",
        "api",
        "cli",
        "celery",
        "fastapi",
    },
    "service": {"api", "workers", "cli", "fastapi", "starlette", "celery", "kombu"},
    "workers": {"api", "cli", "fastapi", "starlette"},
    "api": {"cli"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module imported at run time (imports under `if TYPE_CHECKING:` are for annotations only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def imported_roots(path: Path) -> set[str]:
    return {m.split(".")[0] for m in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_api_reaches_workers_only_to_enqueue():
    """HTTP calls the service layer; of the Celery side it takes only the enqueue module, wired once where the
    app is built (api/app.py), and the routes get it from the app's state."""
    found, importers = {}, set()
    for f in sorted((ROOT / "api").rglob("*.py")):
        mods = {m for m in imported_modules(f) if m == "workers" or m.startswith("workers.")}
        outside = {m for m in mods if not (m == "workers.queueing" or m.startswith("workers.queueing."))}
        if mods:
            importers.add(str(f.relative_to(ROOT)))
        if outside:
            found[str(f.relative_to(ROOT))] = sorted(outside)
    assert found == {}
    assert importers == {"api/app.py"}


def test_no_module_grows_past_400_lines():
    long = {}
    for pkg in ("composer", "registry_db", "service", "workers", "api", "cli"):
        for f in (ROOT / pkg).rglob("*.py"):
            if "migrations/versions" in str(f):
                continue  # generated DDL
            n = len(f.read_text().splitlines())
            if n > 400:
                long[str(f.relative_to(ROOT))] = n
    assert long == {}


# Where the methods come together (their faces, presets, the serving runtime, the CLI, the import probe); every
# other module of composer is the engine, or a method package.
TOGETHER = ("kinds", "presets", "serving", "cli", "probe")
# One package per method. A method imports the engine and never another method, except that a fusion fuses
# bottleneck adapters, and so builds on the bottleneck method's modules.
METHODS = (
    *(
        "bottleneck",
        "lora",
        "adalora",
        "diff",
        "ia3",
        "bitfit",
        "compacter",
        "fusion",
        "prompts",
        "prefix",
        "p_tuning",
        "compositions",
    ),
)
# Compacter is AdapterHub's bottleneck adapter with PHM projections (BnConfig.phm_layer): it extends that config.
MAY_USE = {
    "adalora": {"lora"},
    "fusion": {"bottleneck"},
    "compacter": {"bottleneck"},
    "prefix": {"prompts"},
    "p_tuning": {"prompts"},
}


def _uses(path: Path, package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in imported_modules(path))


def test_the_engine_never_imports_a_method_and_methods_never_import_each_other():
    flat = sorted((ROOT / "composer").glob("*.py"))
    engine = [p for p in flat if p.stem not in TOGETHER and p.stem != "__init__"]
    assert len(engine) >= 15 and all((ROOT / "composer" / m).is_dir() for m in METHODS)
    uses_a_method = {
        str(p.relative_to(ROOT)): [m for m in METHODS if _uses(p, f"composer.{m}")]
        for p in engine
        if any(_uses(p, f"composer.{m}") for m in METHODS)
    }
    assert uses_a_method == {}
    crossing = {}
    for method in METHODS:
        for f in (ROOT / "composer" / method).rglob("*.py"):
            others = [
                m for m in METHODS if m != method and m not in MAY_USE.get(method, ()) and _uses(f, f"composer.{m}")
            ]
            if others:
                crossing[str(f.relative_to(ROOT))] = others
    assert crossing == {}


def test_every_method_package_has_one_face_registered_by_name():
    """Adding a method is one package whose kind.py defines its face(s), and one line in composer/kinds.py."""
    from composer.kinds import KINDS

    for method in METHODS:
        assert (ROOT / "composer" / method / "kind.py").is_file(), method
    faces = {type(face).__module__.split(".")[1] for face in KINDS.values()}
    assert faces == set(METHODS)


def test_api_and_workers_never_branch_on_a_method_kind():
    """A kind's behaviour lives in its face (composer.kinds): no `kind == "fusion"` in the layers above."""
    from composer.kinds import KINDS

    def literals(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return set().union(*(literals(e) for e in node.elts))
        return set()

    branches = []
    for pkg in ("api", "service", "workers", "cli"):
        for f in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Compare):
                    found = set().union(literals(node.left), *(literals(c) for c in node.comparators))
                    if found & set(KINDS):
                        branches.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert branches == []
