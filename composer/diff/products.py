"""MKL's CSR products for a saved diff: where the C++ kernel (`composer.diff.kernel`) does not serve (not loaded
yet, not buildable here, another dtype or device), a site's delta is the CSR times the input's columns, and a
layer's query, key and value share one product of their stacked deltas."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from composer.diff.modules import DiffSite


def int32(csr: torch.Tensor) -> torch.Tensor:
    """A CSR with 32-bit indices: the CPU's sparse product takes them as they are (64-bit ones it converts at every
    call: 4-5 µs of a 10-25 µs product on a few rows' tokens)."""
    if csr.device.type != "cpu":
        return csr
    return torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape)


def columns_product(csr: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(x δ^T + δ_b)^T, [out, tokens] for x [..., in] of any dtype: the CSR times the input's columns, cast to the
    delta's dtype, with the bias, in one addmm (the CSR wants that dense operand contiguous: 10-20 µs on 13 tokens
    against 30-65 strided)."""
    return torch.addmm(bias, csr, x.reshape(-1, x.shape[-1]).to(csr.dtype).t().contiguous())


def stacked_product(csr: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x δ^T + δ_b as [tokens, Σ out] for x [tokens, in]: the CSR times the input's columns, accumulated into the
    bias laid out column-major (the transposed view of a [tokens, Σ out] matrix), so the input is read as it is and
    the result needs no transposed copy. Against the input transposed into a row-major copy: 38 against 41 µs on
    13 tokens and 119 against 145 µs on 64 (a 1152×384 stacked query, key and value delta, just after a large
    matmul, as in the forward)."""
    if x.dtype != csr.dtype:
        return columns_product(csr, bias, x).t()
    y = bias.t().expand(x.shape[0], -1).clone()
    yt = y.t()
    torch.addmm(yt, csr, x.t(), out=yt)
    return y


class Stacked:
    """A layer's saved sites on linears that read one input (query, key, value): their deltas as one CSR, so the
    rows of a run pay one sparse product for the three instead of three (each a small op that finds its operands
    out of the caches after the layer's matmuls). The first sibling called on an input computes the product for
    all and leaves the others' parts in the forward's memo; each part is handed out once."""

    def __init__(self, sites: dict[str, DiffSite]):
        self.sites = sites
        self._built: tuple[Any, ...] | None = None

    def delta(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, slice]]:
        """(the stacked CSR [Σ out, in], its dense bias [Σ out, 1], each site's rows), rebuilt when a value moves."""
        key = tuple((s.w_value.data_ptr(), s.w_value._version, s.b_value._version) for s in self.sites.values())
        if self._built is None or self._built[0] != key:
            parts, csrs, biases, start = {}, [], [], 0
            for name, site in self.sites.items():
                csr, bias = site.sparse_delta()
                csrs.append(csr.to_sparse_coo())
                biases.append(bias)
                parts[name] = slice(start, start + site.shape[0])
                start += site.shape[0]
            with warnings.catch_warnings():  # sparse CSR is in beta: covered by tests
                warnings.simplefilter("ignore", UserWarning)
                csr = int32(torch.cat(csrs).coalesce().to_sparse_csr())
            self._built = (key, csr, torch.cat(biases), parts)
        return self._built[1], self._built[2], self._built[3]

    def adder(
        self, name: str, memo: dict[tuple[int, ...], dict[str, torch.Tensor]]
    ) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def add(out: torch.Tensor, x: torch.Tensor) -> None:
            key = (id(self), x.data_ptr(), *x.shape)
            got = memo.get(key)
            if got is None or name not in got:
                csr, bias, parts = self.delta()
                y = stacked_product(csr, bias, x.reshape(-1, x.shape[-1]))
                got = memo[key] = {n: y[:, part] for n, part in parts.items()}  # [tokens, out] views
            out.view(-1, out.shape[-1]).add_(got.pop(name))

        return add
