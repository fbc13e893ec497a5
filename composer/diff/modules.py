"""Diff pruning (Guo et al. 2021): a task adds a sparse delta δ to the frozen weights and biases of the encoder's
linear projections, `linear(x) + x δ_W^T + δ_b`.

Training (`nnz` unset) learns δ = z ⊙ w densely, where z is a hard-concrete gate per parameter (Louizos et al.
2018: stretched to [l, r] = [-1.5, 1.5], temperature β = 1, sampled in training, its median at evaluation), and
the hooks add the expected L0 norm of the gates — the mean over every gated parameter of
sigmoid(log α − β log(−l / r)), times `l0_weight` — to the loss. Saving projects δ onto the target density by
magnitude (the paper's projection, about 0.5% kept) and stores it sparse: per site the flat indices and values of
the weight delta and of the bias delta, with `nnz` counting them. Served, each row adds its own module's sparse
delta to its rows only (one sparse product per run of its rows and linear, through the C++ kernel of
`composer.diff.kernel`; where MKL's product serves instead, `composer.diff.products`, a layer's query, key and
value, which read one input, share one product of their stacked deltas), so rows of other modules and methods
are untouched. LayerNorm and the embeddings stay frozen (as BitFit's LayerNorm biases do).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from composer.diff.kernel import KERNEL, call, parts
from composer.diff.products import Stacked, columns_product, int32
from composer.errors import ArtifactError, ConfigError, IncompatibleBaseError
from composer.injection import (
    FAMILIES,
    LinearHandler,
    LinearTargets,
    config_from_dict,
    site_name,
)
from composer.runs import add_on_runs, row_runs

STRETCH = (-1.5, 1.5)  # the hard-concrete's [l, r]
BETA = 1.0


@dataclass(frozen=True)
class DiffConfig(LinearTargets):
    target_modules: tuple[str, ...] | None = None  # None: every linear of a layer
    layers: tuple[int, ...] | None = None
    density: float = 0.005  # the fraction of the targeted parameters kept at save
    l0_weight: float = 1.0  # times the mean expected L0 norm of the gates
    log_alpha_init: float = 5.0  # the gates start open (z ≈ 1)
    alpha_learning_rate: float = 0.1  # the gates' own learning rate
    nnz: dict[str, list[int]] | None = None  # saved: per site, [weight entries, bias entries] kept
    shapes: dict[str, list[int]] | None = None  # saved: per site, the linear's [out, in]

    fusable: ClassVar[bool] = False
    method: ClassVar[str] = "diff"
    default_kind: ClassVar[str] = "diff"

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"density must be in (0, 1], got {self.density!r}")
        if self.l0_weight < 0 or self.alpha_learning_rate <= 0:
            raise ConfigError("l0_weight must be >= 0 and alpha_learning_rate > 0")
        self.normalise_targets()
        if (self.nnz is None) != (self.shapes is None) or (
            self.nnz is not None and set(self.nnz) != set(self.shapes or {})
        ):
            raise ConfigError("nnz and shapes: a saved diff lists the same sites in both")

    def check_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """A saved diff's indices: integers, as many as `nnz` says, each inside its linear's shape."""
        for name, (out, inp) in (self.shapes or {}).items():
            for part, size, count in (("w", out * inp, self.nnz[name][0]), ("b", out, self.nnz[name][1])):  # type: ignore[index]
                index, value = tensors.get(f"sites.{name}.{part}_index"), tensors.get(f"sites.{name}.{part}_value")
                if index is None or value is None or index.dtype != torch.long:
                    raise ArtifactError(f"diff {name}: {part}_index (int64) and {part}_value are required")
                if index.shape != (count,) or value.shape != (count,):
                    raise ArtifactError(
                        f"diff {name}: nnz says {count} {part} entries, the file has {tuple(index.shape)}"
                    )
                if count and (int(index.min()) < 0 or int(index.max()) >= size):
                    raise ArtifactError(
                        f"diff indices: {name}'s {part} index is out of range for a [{out}, {inp}] linear"
                    )

    def build(self, model: Any) -> DiffAdapter:
        return DiffAdapter(self, self.adapted_shapes(model), FAMILIES[model.base.family].siblings)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffConfig:
        return config_from_dict(cls, data, "diff")


def gates(log_alpha: torch.Tensor, training: bool) -> torch.Tensor:
    """The hard-concrete gate z in [0, 1]: sampled in training, its deterministic value at evaluation."""
    lo, hi = STRETCH
    if training:
        u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (1 - u).log() + log_alpha) / BETA)
    else:
        s = torch.sigmoid(log_alpha)
    return (s * (hi - lo) + lo).clamp(0.0, 1.0)


def expected_l0(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z != 0) per gate."""
    lo, hi = STRETCH
    return torch.sigmoid(log_alpha - BETA * math.log(-lo / hi))


class DiffSite(nn.Module):
    """One linear's delta. Training: dense w and gates for the weight and the bias. Saved: sparse flat indices
    and values (`w_index`, `w_value`, `b_index`, `b_value`)."""

    def __init__(self, shape: tuple[int, int], cfg: DiffConfig, nnz: tuple[int, int] | None):
        super().__init__()
        out, inp = shape
        self.shape = shape
        self.sparse = nnz is not None
        if nnz is None:
            self.w = nn.Parameter(torch.zeros(out, inp))
            self.b = nn.Parameter(torch.zeros(out))
            self.w_log_alpha = nn.Parameter(torch.full((out, inp), cfg.log_alpha_init))
            self.b_log_alpha = nn.Parameter(torch.full((out,), cfg.log_alpha_init))
        else:
            self.register_buffer("w_index", torch.zeros(nnz[0], dtype=torch.long))
            self.w_value = nn.Parameter(torch.zeros(nnz[0]))
            self.register_buffer("b_index", torch.zeros(nnz[1], dtype=torch.long))
            self.b_value = nn.Parameter(torch.zeros(nnz[1]))
        self._csr: tuple[Any, ...] | None = None  # the saved form's entries, derived from its weights

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ_W [out, in], δ_b [out]) in training form: the gated weights."""
        return gates(self.w_log_alpha, self.training) * self.w, gates(self.b_log_alpha, self.training) * self.b

    def sparse_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The saved form as (δ_W in CSR, a dense δ_b [out, 1]), built once per set of values (the weight's and the
        bias's: either edited in place is served at once)."""
        return self._sparse()[1:3]

    def _sparse(self) -> tuple[Any, ...]:
        """(key, δ_W in CSR, δ_b [out, 1], δ_b flat or None where the site kept no bias entry, the CSR's parts as
        the kernel reads them)."""
        w, b = self.w_value, self.b_value
        key = (w.data_ptr(), w._version, b.data_ptr(), b._version, w.device)
        if self._csr is None or self._csr[0] != key:
            out, inp = self.shape
            value = w.detach()
            rows, cols = self.w_index // inp, self.w_index % inp
            with warnings.catch_warnings():  # "sparse CSR support is in beta": this use is covered by tests
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), value, (out, inp), check_invariants=True)
                csr = int32(coo.coalesce().to_sparse_csr())
            bias = torch.zeros(out, 1, device=value.device, dtype=value.dtype)
            bias.index_add_(0, self.b_index, b.detach().unsqueeze(1))
            self._csr = (key, csr, bias, bias.view(-1) if b.numel() else None, parts(csr))
        return self._csr

    def _sparse_t(self, x: torch.Tensor) -> torch.Tensor:
        """(x δ_W^T + δ_b)^T, [out, tokens] (`columns_product`)."""
        return columns_product(*self.sparse_delta(), x)

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """out += delta(x), in place. Saved: the CSR times the input's columns accumulated straight into `out`
        viewed as a column-major matrix (no transposed copy either way; one diff on 8 rows 20.4 against 21.3 ms),
        then the bias where the site kept any of it."""
        if not self.sparse:
            out += self.delta(x)
            return
        _, csr, bias, flat, delta = self._sparse()
        o = out.view(-1, out.shape[-1])
        if KERNEL.add(o, x, delta, flat):
            return
        if o.dtype != csr.dtype:
            o.add_(self._sparse_t(x).t().to(o.dtype))
            return
        ot = o.t()
        torch.addmm(ot, csr, x.reshape(-1, x.shape[-1]).t(), out=ot)
        if flat is not None:
            o.add_(flat)

    def kernel_add(self, csr_add: Callable[..., None]) -> Callable[[torch.Tensor, torch.Tensor], None]:
        """`add_to` through the loaded kernel (`composer.diff.kernel`) with this forward's CSR parts taken once (a
        forward that serves a saved float32 diff on the CPU, outside autograd: `DiffAdapter.kernel_serves`)."""
        _, _, _, flat, delta = self._sparse()

        def add(out: torch.Tensor, x: torch.Tensor) -> None:
            if x.dtype != torch.float32:
                return self.add_to(out, x)
            call(csr_add, out.view(-1, out.shape[-1]), x, delta, flat)

        return add

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """x δ_W^T + δ_b for x [..., in]. Saved, δ_W is CSR times the input's columns (a tenth of a dense
        linear's time at 0.5% density on the CPU)."""
        if not self.sparse:
            dw, db = self.dense()
            return nn.functional.linear(x, dw, db)
        return self._sparse_t(x).t().reshape(*x.shape[:-1], -1).to(x.dtype)


class DiffAdapter(nn.Module):
    """The deltas of one diff module, one `DiffSite` per (layer, linear)."""

    slot = "linear"

    def __init__(
        self, cfg: DiffConfig, linears: dict[tuple[int, str], tuple[int, int]], siblings: tuple[str, ...] = ()
    ):
        super().__init__()
        self.cfg = cfg
        shapes = {k: (fo, fi) for k, (fi, fo) in linears.items()}  # linear_shapes gives (in, out)
        if cfg.shapes is not None:
            found = {site_name(*k): list(v) for k, v in shapes.items()}
            if found != cfg.shapes:
                wrong = sorted(n for n in set(found) | set(cfg.shapes) if found.get(n) != cfg.shapes.get(n))
                raise IncompatibleBaseError(
                    f"diff shapes: sites {wrong[:4]} have other shapes (or are missing) on this base; "
                    "the diff was pruned on another model"
                )
        nnz = cfg.nnz or {}
        self.sites = nn.ModuleDict(
            {
                site_name(*k): DiffSite(v, cfg, tuple(nnz[site_name(*k)]) if cfg.nnz is not None else None)  # type: ignore[arg-type]
                for k, v in shapes.items()
            }
        )
        self.by_target: dict[tuple[int, str], DiffSite] = {k: self.sites[site_name(*k)] for k in shapes}  # type: ignore[misc]
        if cfg.nnz is not None:
            KERNEL.get()  # a saved diff will serve: the kernel starts loading now, in the background
        # per layer, its sites on linears that read one input (query, key, value), when it has two or more: served
        # from one product of their deltas stacked (`Stacked`)
        self.stacked: dict[int, Stacked] = {}
        for layer in self.layers():
            group = {n: self.by_target[layer, n] for n in siblings if (layer, n) in self.by_target}
            if len(group) > 1 and cfg.nnz is not None:
                self.stacked[layer] = Stacked(group)

    def kernel_serves(self) -> Any:
        """The loaded C++ kernel (`composer.diff.kernel`) where this forward's sites add through it (saved, float32,
        on the CPU, outside autograd), else None. Each site alone: the kernel's pass over a site costs less than
        a stacked product's share and its adds back."""
        site = next(iter(self.by_target.values()), None)
        if site is None or not site.sparse or torch.is_grad_enabled():
            return None
        if site.w_value.device.type != "cpu" or site.w_value.dtype != torch.float32:
            return None
        return KERNEL.get()

    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.by_target})

    def training_hooks(self) -> Any:
        return DiffHooks(self)

    @staticmethod
    def route(adapters: list[DiffAdapter | None]) -> LinearHandler | None:
        """Row i adds module i's delta (None: nothing): per run of rows on one module, its delta on those rows
        (a sparse product on their tokens alone)."""
        distinct = list(dict.fromkeys(a for a in adapters if a is not None))
        if not distinct:
            return None
        memo: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}  # this forward's shared products (`Stacked`)

        def updates(a: DiffAdapter) -> dict[tuple[int, str], Callable[[torch.Tensor, torch.Tensor], None]]:
            out: dict[tuple[int, str], Callable[[torch.Tensor, torch.Tensor], None]] = {}
            kernel = a.kernel_serves()
            for (layer, name), site in a.by_target.items():
                if kernel is not None:
                    out[layer, name] = site.kernel_add(kernel.csr_add)
                    continue
                stacked = a.stacked.get(layer)
                shared = stacked is not None and name in stacked.sites
                out[layer, name] = stacked.adder(name, memo) if shared else site.add_to  # type: ignore[union-attr]
            return out

        if len(distinct) == 1 and all(a is distinct[0] for a in adapters):
            adds = updates(distinct[0])

            def single(layer: int, name: str, x: torch.Tensor, linear: Callable) -> torch.Tensor | None:
                add = adds.get((layer, name))
                if add is None:
                    return None
                out = linear(x)
                add(out, x)  # in training the gated dense delta, through autograd (in place is fine there)
                return out

            return single
        return add_on_runs(row_runs(adapters), updates)


class DiffHooks:
    """What `fit` calls for a diff: the L0 penalty on the gates, the gates' own learning rate, and the save (the
    magnitude projection onto the target density, stored sparse)."""

    def __init__(self, module: DiffAdapter):
        self.module = module
        self.learning_rates = {"*log_alpha": module.cfg.alpha_learning_rate}

    def check(self, total: int) -> None:
        if any(s.sparse for s in self.module.sites.values()):
            raise ConfigError("a saved (pruned) diff does not train again; train a new one")

    def penalty(self) -> torch.Tensor:
        sites = list(self.module.sites.values())
        total = sum(expected_l0(s.w_log_alpha).sum() + expected_l0(s.b_log_alpha).sum() for s in sites)
        count = sum(s.w.numel() + s.b.numel() for s in sites)
        return self.module.cfg.l0_weight * total / count  # type: ignore[return-value]

    def after_step(self, step: int, total: int) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        return None

    def saved(self) -> tuple[DiffConfig, dict[str, torch.Tensor]]:
        """Keep the `density` largest |δ| over every targeted parameter (exact zeros never), stored sparse."""
        import dataclasses

        was = self.module.training
        self.module.eval()
        with torch.no_grad():
            deltas = {n: s.dense() for n, s in self.module.sites.items()}
        self.module.train(was)
        flat = torch.cat([torch.cat([dw.reshape(-1), db]) for dw, db in deltas.values()]).abs()
        k = max(1, math.ceil(self.module.cfg.density * flat.numel()))
        threshold = flat.topk(k).values[-1] if k < flat.numel() else flat.new_tensor(0.0)
        tensors, nnz, shapes = {}, {}, {}
        for name, (dw, db) in deltas.items():
            w_keep = ((dw.abs() >= threshold) & (dw != 0)).reshape(-1).nonzero().view(-1)
            b_keep = ((db.abs() >= threshold) & (db != 0)).nonzero().view(-1)
            tensors[f"sites.{name}.w_index"], tensors[f"sites.{name}.w_value"] = (
                w_keep.cpu(),
                dw.reshape(-1)[w_keep].cpu(),
            )
            tensors[f"sites.{name}.b_index"], tensors[f"sites.{name}.b_value"] = b_keep.cpu(), db[b_keep].cpu()
            nnz[name] = [int(w_keep.numel()), int(b_keep.numel())]
            shapes[name] = list(dw.shape)
        return dataclasses.replace(self.module.cfg, nnz=nnz, shapes=shapes), tensors
