"""The diff's C++ sparse kernel (composer/diff/csr_add.cpp): its sums against a dense oracle, its use in serving,
and the MKL product that serves where it is not loaded."""

from __future__ import annotations

import logging
import os
import shutil
import time

import pytest
import torch

from composer.diff import kernel as kernel_mod
from composer.diff.kernel import KERNEL, _Kernel
from composer.diff.modules import int32

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the kernel")


def _delta(rows: int, cols: int, density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dense = torch.zeros(rows, cols)
    keep = torch.randperm(rows * cols, generator=g)[: max(1, int(density * rows * cols))]
    dense.view(-1)[keep] = torch.randn(len(keep), generator=g)
    dense[rows // 2] = 0.0  # a row with no entry
    return dense


@pytest.fixture(params=["avx512", "generic"])
def write_out(request):  # type: ignore[no-untyped-def]
    """The kernel's two ways of adding its result into the output (AVX-512, where the CPU has it, and the
    generic loop other CPUs run), each checked on this machine."""
    module = KERNEL.load()
    assert module is not None, KERNEL.failed  # a machine with a compiler builds it
    was = module.allow_avx512(request.param == "avx512")
    yield request.param
    module.allow_avx512(was)


@needs_compiler
@pytest.mark.parametrize("tokens", [1, 13, 16, 17, 40])
@pytest.mark.parametrize("with_bias", [True, False])
def test_the_kernel_adds_the_sparse_product_and_bias_in_place(tokens, with_bias, write_out):
    g = torch.Generator().manual_seed(tokens)
    dense = _delta(90, 40, 0.05, tokens)  # 90 rows: five blocks of 16 and a part block
    csr = int32(dense.to_sparse_csr())
    bias = torch.randn(90, generator=g) if with_bias else None
    x = torch.randn(tokens, 40, generator=g)
    wide = torch.randn(tokens, 100, generator=g)  # out as a column slice: rows at a stride other than its width
    out = wide[:, 3:93]
    want = out + x @ dense.t() + (bias if bias is not None else 0.0)
    untouched = wide[:, [0, 1, 2, 93, 99]].clone()
    assert KERNEL.add(out, x, kernel_mod.parts(csr), bias)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    assert torch.equal(wide[:, [0, 1, 2, 93, 99]], untouched)  # nothing written outside the slice
    xt = torch.randn(40, tokens, generator=g).t()  # an input whose columns are strided
    before = out.clone()
    assert KERNEL.add(out, xt, kernel_mod.parts(csr), None)
    torch.testing.assert_close(out, before + xt @ dense.t(), atol=1e-5, rtol=0)


@needs_compiler
def test_the_kernel_steps_aside_where_it_does_not_apply():
    """Other dtypes, autograd, a non-CPU delta: the caller's own product (False, nothing written)."""
    csr = int32(_delta(8, 6, 0.3, 0).to_sparse_csr())
    out, x = torch.zeros(3, 8), torch.randn(3, 6)
    delta = kernel_mod.parts(csr)
    assert not KERNEL.add(out.double(), x.double(), delta, None)
    assert not KERNEL.add(out, x.requires_grad_(), delta, None)
    assert not KERNEL.add(out.t().contiguous().t(), x.detach(), delta, None)  # columns not contiguous
    assert torch.equal(out, torch.zeros(3, 8))
    with pytest.raises(RuntimeError, match="as many features"):  # never reads past the input's columns
        KERNEL.module.csr_add(out, torch.randn(3, 5), *delta[:3], None, 6)


@needs_compiler
def test_a_served_diff_runs_through_the_kernel_and_equals_mkls_product(tiny_bert_dir, monkeypatch):
    from composer.composition import BatchSplit, Single
    from tests.composer.test_methods_diff import TASK, _trained, _with_delta

    base, data, run = _trained(tiny_bert_dir)
    art = run.artifact(TASK)
    from composer import adapter_artifact as artifacts
    from composer.base import load_base
    from composer.data import Collator
    from composer.encoder import AdaptedEncoder

    model = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    artifacts.attach(model, art, name="d")
    batch = {k: v for k, v in Collator(base.tokenizer, TASK)(data[:4]).items() if k != "labels"}
    module = KERNEL.load()
    calls = []
    monkeypatch.setattr(KERNEL, "module", type("M", (), {"csr_add": lambda *a: calls.append(1) or module.csr_add(*a)}))
    split = BatchSplit(("d", None, "d", "d"))
    with torch.inference_mode():
        got = model(**batch, composition=split).hidden
        alone = model(**batch, composition=Single("d")).hidden
        want = _with_delta(tiny_bert_dir, art)(**batch).hidden
    sites = len(model.adapters["d"].by_target)
    on_cpu = model.adapters["d"].sites[next(iter(model.adapters["d"].sites))].w_value.device.type == "cpu"
    # each site on each of the two runs of rows, then on the whole batch (on a GPU: torch's sparse product)
    assert len(calls) == (2 * sites + sites if on_cpu else 0)
    calls.clear()
    with torch.inference_mode(), KERNEL.off():  # MKL's product, stacked per layer
        mkl = model(**batch, composition=split).hidden
    assert not calls and KERNEL.get() is not None  # off() served MKL and is undone on the way out
    got, alone, want, mkl = got.cpu(), alone.cpu(), want.cpu(), mkl.cpu()
    torch.testing.assert_close(got[[0, 2, 3]], want[[0, 2, 3]], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, mkl, atol=1e-5, rtol=0)
    with torch.inference_mode():
        assert (want - model(**batch).hidden.cpu()).abs().max() > 1e-4  # the delta matters


def test_a_kernel_that_cannot_be_built_leaves_mkl_serving(monkeypatch, caplog, tmp_path):
    import torch.utils.cpp_extension as ext

    def fail(**_kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(ext, "load", fail)
    k = _Kernel(root=tmp_path)  # nothing built there
    with caplog.at_level(logging.WARNING, logger=kernel_mod.__name__):
        assert k.load() is None
    assert k.failed == "Ninja is required to load C++ extensions"
    assert "MKL's product serves" in caplog.text
    assert k.state() == "unavailable: Ninja is required to load C++ extensions"
    assert k.get() is None and not k.add(
        torch.zeros(2, 3), torch.zeros(2, 4), kernel_mod.parts(torch.zeros(3, 4).to_sparse_csr()), None
    )


@needs_compiler
def test_a_process_loads_the_kernel_in_the_background_and_serves_mkl_meanwhile():
    k = _Kernel()
    assert k.state() == "not loaded"
    first = k.get()  # starts the load; None until it is ready
    deadline = time.monotonic() + 300
    while k.get() is None and k.failed is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first is None or first is k.module
    assert k.module is not None, k.failed
    assert k.state() == "loaded"
    assert k.started_in is not None


def _load_in_child(k: _Kernel, q) -> None:  # type: ignore[no-untyped-def]
    first = k.get()
    q.put((first is None, k.load() is not None, k.failed))


@needs_compiler
def test_a_forked_child_loads_its_own_kernel_while_its_parent_is_loading():
    """Forked while the parent's loading thread holds the lock (a Celery prefork child): the child neither waits
    on that lock forever nor on a thread it does not have."""
    import multiprocessing

    k = _Kernel()
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    with k.lock:  # as while the parent's background load runs
        k.started_in = os.getpid()
        child = ctx.Process(target=_load_in_child, args=(k, q))
        child.start()
    child.join(300)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's kernel lock")
    waited, loaded, failed = q.get(timeout=5)
    assert waited and loaded, failed


def test_the_pip_ninja_goes_onto_path_where_none_is_found(monkeypatch):
    """A service started as .venv/bin/uvicorn (no venv activated) finds the ninja that pip installed."""
    import ninja

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(kernel_mod.shutil, "which", lambda name: None)
    kernel_mod._ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep)[0] == ninja.BIN_DIR
    assert os.path.exists(os.path.join(ninja.BIN_DIR, "ninja"))


@needs_compiler
def test_a_built_kernel_is_imported_without_running_the_builder(monkeypatch):
    """Once built on this machine, a process imports the library itself: no ninja run and no build lock, so a
    process killed while loading it leaves no lock that would stall the next."""
    import torch.utils.cpp_extension as ext

    assert KERNEL.load() is not None
    name, directory = kernel_mod.build_directory()
    monkeypatch.setattr(ext, "load", lambda **_kw: pytest.fail("the builder ran for a built kernel"))
    k = _Kernel()
    assert k.load() is not None and k.module.__name__ == name
    assert not (directory / "lock").exists()
    other, _ = kernel_mod.build_directory()
    monkeypatch.setattr(kernel_mod, "FLAGS", ["-O2"])  # other flags (or source, or torch): another build
    assert kernel_mod.build_directory()[0] != other


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    assert not kernel_mod.clear_stale_lock(tmp_path) and lock.exists()  # a build may be running
    old = time.time() - 3600
    os.utime(lock, (old, old))
    assert kernel_mod.clear_stale_lock(tmp_path) and not lock.exists()  # a killed build's
    assert not kernel_mod.clear_stale_lock(tmp_path)
