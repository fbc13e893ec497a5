"""The PHM layer: `W = Σ_i A_i ⊗ B_i` with A_i the n×n rule (shared by every layer of one adapter by default)
and B_i = W_left_i W_right_i of rank `phm_rank` (factorised, Compacter's "LPHM"), so a [in, out] projection
costs n³ + n·(in + out)/n·rank parameters instead of in·out.

Numerics follow AdapterHub 1.3's `PHMLayer` (`y = x H + b`, H = Σ kron(rule, W)). One difference, on purpose:
its `init_W` tests `if config["hypercomplex_nonlinearity"]:`, true for every setting, so "glorot-uniform" (the
default) initialises with Xavier-normal; here the named scheme is used. It only changes a fresh module's
starting point, never an imported one's numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product of [..., p, q] and [..., r, s] into [..., p·r, q·s] (AdapterHub's)."""
    size = (a.shape[-2] * b.shape[-2], a.shape[-1] * b.shape[-1])
    return (a.unsqueeze(-1).unsqueeze(-3) * b.unsqueeze(-2).unsqueeze(-4)).reshape(*a.shape[:-2], *size)


class PHMLinear(nn.Module):
    """A projection [in] -> [out] whose matrix is a sum of Kronecker products. `weight` is [out, in], as a
    Linear's, so the bottleneck machinery (mixed rows, fusion's stacked members) reads it like any other."""

    def __init__(self, in_features: int, out_features: int, cfg, shared: Callable[[], nn.ParameterDict]):  # type: ignore[no-untyped-def]
        super().__init__()
        n, rank = cfg.phm_dim, cfg.phm_rank
        self.in_features, self.out_features = in_features, out_features
        self.init, self.init_range, self.factorized = (
            cfg.hypercomplex_nonlinearity,
            cfg.phm_init_range,
            cfg.factorized_phm_W,
        )
        if self.factorized:
            self.W_left = nn.Parameter(torch.empty(n, in_features // n, rank))
            self.W_right = nn.Parameter(torch.empty(n, rank, out_features // n))
        else:
            self.W = nn.Parameter(torch.empty(n, in_features // n, out_features // n))
        self.b = nn.Parameter(torch.zeros(out_features)) if cfg.phm_bias else None
        self._shared = shared
        self._cache: tuple[tuple, torch.Tensor] | None = None  # H, derived from the weights (inference only)
        if not self.b.is_meta if self.b is not None else True:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        init = {
            "glorot-uniform": nn.init.xavier_uniform_,
            "glorot-normal": nn.init.xavier_normal_,
            "normal": lambda t: nn.init.normal_(t, 0.0, self.init_range),
        }[self.init]
        with torch.no_grad():
            for p in (self.W_left, self.W_right) if self.factorized else (self.W,):
                for i in range(p.shape[0]):
                    init(p[i])
            if self.b is not None:
                self.b.zero_()

    @property
    def rule(self) -> torch.Tensor:
        return self._shared()["phm_rule"]

    def matrix(self) -> torch.Tensor:
        """H [in, out] = Σ_i kron(rule_i, W_i). Without gradients it is built once per set of weights (keyed by
        their storage and version), so serving does not redo the Kronecker products at every forward."""
        parts = (self.W_left, self.W_right) if self.factorized else (self.W,)
        if torch.is_grad_enabled():
            return self._matrix(parts)
        rule = self.rule
        key = tuple((t.data_ptr(), t._version, t.device) for t in (*parts, rule))
        cached = self._cache
        if cached is None or cached[0] != key:
            cached = self._cache = (key, self._matrix(parts))
        return cached[1]

    def _matrix(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        w = torch.bmm(*parts) if self.factorized else parts[0]
        return kron(self.rule, w).sum(0)

    @property
    def weight(self) -> torch.Tensor:
        return self.matrix().t()

    @property
    def bias(self) -> torch.Tensor:
        return self.b if self.b is not None else self.rule.new_zeros(self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.b is None:
            return torch.matmul(x, self.matrix())
        # the bias in the product (one op, not a product and a sum: a mixed batch runs this per run of rows)
        y = torch.addmm(self.b, x.reshape(-1, x.shape[-1]), self.matrix())
        return y.view(*x.shape[:-1], y.shape[-1])
