"""The diff's sparse product as a small C++ kernel (`csr_add.cpp`), for the few tokens of a run of rows.

MKL's CSR product on a few rows' tokens is mostly fixed cost: 17-80 µs on 13 tokens at MiniLM's four site
shapes of 0.5% density, just after a large matmul as in a forward. The kernel lays out 16 tokens at a time
transposed, so each stored entry is one 16-lane multiply-add, and adds the bias in the same pass: 8-35 µs there,
and no slower than MKL up to 64 tokens; larger inputs split their chunks over threads. A mixed batch of 8 kinds
runs 3-5% faster with it (interleaved call by call; bench/kinds has the ratio beside MKL's). Its sums run in
another order than MKL's, so the two agree to float rounding (about 1e-6).

It is built with torch's C++ extension builder (a C++ compiler and ninja; about 35 s) once per machine, source,
torch and Python (`build_directory`: `composer/<name with their hash>` under `TORCH_EXTENSIONS_DIR`, by default
~/.cache/torch_extensions): `scripts/install.sh` runs `python -m composer.diff.kernel`. A process imports the
built library itself, and loads it in a background thread on first use, serving through MKL until it is ready;
where it cannot be built (no compiler), MKL serves and the log says why, once.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csr_add.cpp")
NAME = "composer_diff_csr_add"
FLAGS = ["-O3"]
Parts = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]  # a CSR's row offsets, columns, values; column count


class _Kernel:
    """The compiled module, loaded once per process (a forked child loads its own)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root  # where builds go (None: TORCH_EXTENSIONS_DIR, or torch's default ~/.cache/torch_extensions)
        self.lock = threading.Lock()
        self.module: Any = None
        self.failed: str | None = None
        self.started_in: int | None = None  # the pid that started loading (a fork does not inherit the thread)
        self.disabled = 0  # inside `off()`
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A forked child (a Celery prefork worker) has no loading thread, and a lock that thread held would never
        be released there: a fresh lock, and it loads its own where the parent had not finished."""
        self.lock = threading.Lock()

    def get(self) -> Any:
        """The module if it is loaded; otherwise starts loading it in the background and gives None (serve
        through MKL meanwhile)."""
        if self.disabled:
            return None
        if self.module is not None or self.failed is not None:
            return self.module
        if self.started_in != os.getpid():
            with self.lock:
                if self.started_in != os.getpid():
                    self.started_in = os.getpid()
                    threading.Thread(target=self.load, name="diff-kernel", daemon=True).start()
        return None

    def load(self) -> Any:
        """Load it now, building it if this machine has not (blocking); None where it cannot be built."""
        with self.lock:
            if self.module is None and self.failed is None:
                try:
                    self.module = _built(self.root)
                except Exception as e:  # noqa: BLE001 - no compiler or ninja: MKL's product serves
                    self.failed = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
                    log.warning("the diff's CSR kernel could not be built; MKL's product serves (%s)", self.failed)
        return self.module

    def state(self) -> str:
        """ "loaded", "loading" (MKL serves meanwhile), "not loaded" (no saved diff has served yet), or
        "unavailable: <why>" (MKL serves)."""
        if self.module is not None:
            return "loaded"
        if self.failed is not None:
            return f"unavailable: {self.failed}"
        return "loading" if self.started_in == os.getpid() else "not loaded"

    @contextmanager
    def off(self) -> Iterator[None]:
        """MKL's product serves inside (benches measure the two side by side, tests the fallback); the process's
        state is restored on the way out."""
        self.disabled += 1
        try:
            yield
        finally:
            self.disabled -= 1

    def add(self, out: torch.Tensor, x: torch.Tensor, delta: Parts, bias: torch.Tensor | None) -> bool:
        """out [T, F] += x δ^T (+ bias [F]) in place through the kernel, where it is loaded and serves these
        operands (float32 on the CPU, outside autograd); False where it did nothing (the caller's product then)."""
        values = delta[2]
        if values.device.type != "cpu" or not (out.dtype == x.dtype == values.dtype == torch.float32):
            return False
        if out.stride(-1) != 1 or (torch.is_grad_enabled() and (x.requires_grad or out.requires_grad)):
            return False
        module = self.get()
        if module is None:
            return False
        call(module.csr_add, out, x, delta, bias)
        return True


KERNEL = _Kernel()


def build_directory(root: Path | None = None) -> tuple[str, Path]:
    """(the module's name, its build directory). The name carries a hash of the source, the build flags, torch's
    version and Python's, so a build of other code or for another torch is never loaded as this one."""
    from torch.utils.cpp_extension import get_default_build_root

    ident = "|".join([SOURCE.read_text(), " ".join(FLAGS), torch.__version__, sys.version])
    name = f"{NAME}_{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
    base = root if root is not None else Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    return name, base / "composer" / name


def _built(root: Path | None) -> Any:
    """The module: imported straight from its library where this machine built it (no ninja run and no build
    lock taken, so a process killed while loading leaves nothing behind), built first otherwise."""
    name, directory = build_directory(root)
    library = directory / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[-1]}"
    if not library.exists():
        from torch.utils.cpp_extension import load

        directory.mkdir(parents=True, exist_ok=True)
        clear_stale_lock(directory)
        _ninja_on_path()
        load(name=name, sources=[str(SOURCE)], extra_cflags=FLAGS, build_directory=str(directory), verbose=False)
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clear_stale_lock(directory: Path, older_than_s: float = 600.0) -> bool:
    """Remove the build lock a killed build left (torch's builder waits on it forever); a build takes under a
    minute, so a lock older than `older_than_s` has no builder behind it."""
    lock = directory / "lock"
    try:
        if time.time() - lock.stat().st_mtime > older_than_s:
            lock.unlink()
            log.warning("removed a stale build lock of the diff kernel (%s)", lock)
            return True
    except FileNotFoundError:
        pass
    return False


def _ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; a process started as .venv/bin/python (not activated) has the pip
    package's ninja only inside that package: its directory goes onto PATH when no other ninja is found."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def parts(csr: torch.Tensor) -> Parts:
    """(row offsets, columns, values, column count) of a CSR, as the kernel reads them."""
    return csr.crow_indices(), csr.col_indices(), csr.values(), csr.shape[1]


def call(csr_add: Callable[..., None], out: torch.Tensor, x: torch.Tensor, delta: Parts, bias: Any) -> None:
    """The kernel on `out` [T, F] and the input's tokens as rows with contiguous features (operands checked)."""
    x2 = x.reshape(-1, x.shape[-1])
    csr_add(out, x2 if x2.stride(-1) == 1 else x2.contiguous(), *delta[:3], bias, delta[3])


if __name__ == "__main__":  # python -m composer.diff.kernel: build it (scripts/install.sh)
    logging.basicConfig(level=logging.INFO)
    if KERNEL.load() is None:
        print(f"diff kernel not built: {KERNEL.failed}", file=sys.stderr)
        sys.exit(1)
    print("diff kernel built")
