"""Helpers shared by the benchmarks: timing, the parity venv, and writing docs/benchmarks.md sections."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PARITY_PY = ROOT / ".venv-parity" / "bin" / "python"
DEVICE = "cpu"  # where the benches that take --device run their models (`use_device`)


def add_device(ap: Any) -> None:
    ap.add_argument("--device", default="cpu", help="cpu, or cuda[:N]: the GPU figures go beside the CPU ones")


def use_device(name: str) -> str:
    """Run on `name` (refused when this torch sees no such device); timings synchronise with it."""
    global DEVICE
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this torch sees no CUDA device (torch {torch.__version__})")
    DEVICE = name
    return name


def section(name: str) -> str:
    """A bench's docs section on the device it ran on: CPU figures as before, GPU ones beside them."""
    return name if DEVICE == "cpu" else f"{name}_{DEVICE.split(':')[0]}"


def sync() -> None:
    """Wait for the device's queued work before a clock is read (kernels on a GPU return before they run)."""
    if DEVICE.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def once_ms(fn: Callable[[], object]) -> float:
    """Wall time of one fn() call in milliseconds (the device synchronised around it)."""
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t) * 1000


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() in milliseconds (the device synchronised around each call)."""
    for _ in range(warmup):
        fn()
    return statistics.median(once_ms(fn) for _ in range(repeats))


def alternating(runs: dict[str, Callable[[], object]], rnd: int, repeats: int, warmup: int = 1) -> dict[str, float]:
    """One round of side-by-side timing: each run's median ms over `repeats`, in an order rotated by the round
    number, so that a shared machine's drift and warm-up fall on every run alike over the rounds."""
    names = list(runs)
    order = names[rnd % len(names) :] + names[: rnd % len(names)]
    return {name: time_ms(runs[name], repeats, warmup) for name in order}


def interleaved(runs: dict[str, Callable[[], object]], rnd: int, repeats: int, warmup: int = 1) -> dict[str, float]:
    """One round of side-by-side timing, call by call: each repeat times every run once (in an order rotated by
    the repeat and the round), so that all runs sample the same stretch of a shared machine's load; each run's
    median ms over the round. Ratios of two runs then move far less between rounds than with `alternating`'s
    blocks of repeats."""
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        k = (rnd + i) % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(once_ms(runs[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def run_parity(script: str, *args: str) -> dict | None:
    """Run a script with the reference venv (adapters 1.3.0); None when that venv does not exist."""
    if not PARITY_PY.exists():
        return None
    out = subprocess.run([str(PARITY_PY), str(ROOT / "bench" / script), *args], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        raise RuntimeError(f"{script} failed in the parity venv")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between <!-- bench:NAME --> markers in docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def emit(result: dict) -> None:
    """The last line of every benchmark's output: one JSON object."""
    print(json.dumps(result, sort_keys=True))


@contextmanager
def api_server(tmp: Path, db_url: str, blob_dir: str | Path, port: int, **settings: str) -> Iterator[str]:
    """`uvicorn api.main:app` in its own process on a registry prepared by the bench; yields its URL."""
    import httpx

    env = {
        **os.environ,
        "COMPOSER_DATABASE_URL": db_url,
        "COMPOSER_BLOB_URL": f"file://{blob_dir}",
        "COMPOSER_DATA_DIR": str(tmp),
        "COMPOSER_REGISTER_PACKAGED_ENCODER": "false",
        **{f"COMPOSER_{k.upper()}": v for k, v in settings.items()},
    }
    cmd = [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
