"""The diff's sparse product as a small C++ kernel (`csr_add.cpp`), for the few tokens of a run of rows.

MKL's CSR product on a few rows' tokens is mostly fixed cost: 17-80 µs on 13 tokens at MiniLM's four site
shapes of 0.5% density, just after a large matmul as in a forward. The kernel lays out 16 tokens at a time
transposed, so each stored entry is one 16-lane multiply-add, and adds the bias in the same pass: 8-35 µs there,
and no slower than MKL up to 64 tokens; larger inputs split their chunks over threads. A mixed batch of 8 kinds
runs 3-5% faster with it (interleaved call by call; bench/kinds has the ratio beside MKL's). Its sums run in
another order than MKL's, so the two agree to float rounding (about 1e-6).

It is built with torch's C++ extension builder (a C++ compiler and ninja; about 35 s) into torch's extension
directory (`TORCH_EXTENSIONS_DIR`, by default ~/.cache/torch_extensions), once per machine: `scripts/install.sh`
runs `python -m composer.diff.kernel`. A process loads it in a background thread on first use and serves through
MKL until it is ready; where it cannot be built (no compiler), MKL serves and the log says why, once.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("csr_add.cpp")
NAME = "composer_diff_csr_add"


class _Kernel:
    """The compiled module, loaded once per process (a forked child loads its own)."""

    def __init__(self) -> None:
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
                    from torch.utils.cpp_extension import load

                    _ninja_on_path()
                    self.module = load(name=NAME, sources=[str(SOURCE)], extra_cflags=["-O3"], verbose=False)
                except Exception as e:  # noqa: BLE001 - no compiler or ninja: MKL's product serves
                    self.failed = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
                    log.warning("the diff's CSR kernel could not be built; MKL's product serves (%s)", self.failed)
        return self.module

    @contextmanager
    def off(self) -> Iterator[None]:
        """MKL's product serves inside (benches measure the two side by side, tests the fallback); the process's
        state is restored on the way out."""
        self.disabled += 1
        try:
            yield
        finally:
            self.disabled -= 1

    def add(self, out: torch.Tensor, x: torch.Tensor, csr: torch.Tensor, bias: torch.Tensor | None) -> bool:
        """out [T, F] += x δ^T (+ bias [F]) in place through the kernel, where it is loaded and serves these
        operands (float32 on the CPU, outside autograd); False where it did nothing (the caller's product then)."""
        if csr.device.type != "cpu" or not (out.dtype == x.dtype == csr.dtype == torch.float32):
            return False
        if out.stride(-1) != 1 or (torch.is_grad_enabled() and (x.requires_grad or out.requires_grad)):
            return False
        module = self.get()
        if module is None:
            return False
        x2 = x.reshape(-1, x.shape[-1])
        x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
        module.csr_add(out, x2, *parts(csr), bias, csr.shape[1])
        return True


KERNEL = _Kernel()


def _ninja_on_path() -> None:
    """torch's builder runs `ninja` from PATH; a process started as .venv/bin/python (not activated) has the pip
    package's ninja only inside that package: its directory goes onto PATH when no other ninja is found."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def parts(csr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row offsets, columns, values) of a CSR, as the kernel reads them."""
    return csr.crow_indices(), csr.col_indices(), csr.values()


if __name__ == "__main__":  # python -m composer.diff.kernel: build it (scripts/install.sh)
    import sys

    logging.basicConfig(level=logging.INFO)
    if KERNEL.load() is None:
        print(f"diff kernel not built: {KERNEL.failed}", file=sys.stderr)
        sys.exit(1)
    print("diff kernel built")
