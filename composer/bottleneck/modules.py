"""Bottleneck adapters: their config and their modules.

Typed, validated configs for bottleneck adapters, with the AdapterHub `adapters` 1.3.0 presets.

The field names follow AdapterHub's `BnConfig`, so that its `adapter_config.json` maps
onto ours field for field. Only the options that change numerics for BERT-family
encoders are kept; anything else in an imported config must be at its neutral value.

Bottleneck adapter modules: one `BottleneckLayer` per (layer, placement) site.

A site sees the sublayer output `x` (before the residual add), the residual input `r`
and the encoder's own LayerNorm. The computation follows AdapterHub `adapters` 1.3.0
(`Adapter.pre_forward / forward / post_forward` and `ParallelAdapter`) exactly, so
imported adapters give the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from composer.bottleneck import routing, trees
from composer.composition import Average, BatchSplit, Fuse, leaves
from composer.errors import ConfigError
from composer.heads import Linear, activation
from composer.injection import PLACEMENTS, Placement, site_key

if TYPE_CHECKING:
    from composer.encoder import AdaptedEncoder

NonLinearity = Literal["relu", "swish", "silu", "gelu", "tanh", "leakyrelu"]
INIT_SCHEMES = ("bert", "mam_adapter", "houlsby")


@dataclass(frozen=True)
class BottleneckConfig:
    """A bottleneck adapter `A = f(H W_down) W_up + H`, placed after attention and/or the FFN."""

    method: ClassVar[str] = "bottleneck"  # what an artifact's config records
    default_kind: ClassVar[str] = "st_a"  # the registry kind of an adapter extracted with it (MT-As say mt_a)

    mh_adapter: bool = False  # after the attention sublayer
    output_adapter: bool = True  # after the FFN sublayer
    reduction_factor: float = 16.0
    non_linearity: NonLinearity = "relu"
    original_ln_before: bool = True
    original_ln_after: bool = True
    residual_before_ln: bool = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    is_parallel: bool = False
    scaling: float | Literal["learned"] = 1.0
    init_weights: Literal["bert", "mam_adapter", "houlsby"] = "bert"
    dropout: float = 0.0
    leave_out: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.reduction_factor, int | float) or isinstance(self.reduction_factor, bool):
            raise ConfigError(f"reduction_factor must be a number, got {self.reduction_factor!r}")
        if not self.reduction_factor > 0:
            raise ConfigError(f"reduction_factor must be > 0, got {self.reduction_factor}")
        if self.non_linearity not in NonLinearity.__args__:  # type: ignore[attr-defined]
            raise ConfigError(f"unknown non_linearity {self.non_linearity!r}; use one of {NonLinearity.__args__}")  # type: ignore[attr-defined]
        if self.init_weights not in INIT_SCHEMES:
            raise ConfigError(f"unknown init_weights {self.init_weights!r}; use one of {INIT_SCHEMES}")
        if not (isinstance(self.scaling, int | float) or self.scaling == "learned"):
            raise ConfigError(f"scaling must be a number or 'learned', got {self.scaling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.mh_adapter or self.output_adapter):
            raise ConfigError("an adapter needs at least one placement (mh_adapter or output_adapter)")
        object.__setattr__(self, "leave_out", tuple(int(i) for i in self.leave_out))

    fusable = True  # AdapterFusion fuses bottleneck adapters

    def build(self, model: AdaptedEncoder) -> BottleneckAdapter:
        """The adapter these fields describe, for `model`'s base (freshly initialised)."""
        return BottleneckAdapter(self, model.base.hidden_size, model.base.num_layers)

    def check_base(self, family: str, num_layers: int, hidden_size: int | None = None) -> None:
        """Refuse, naming the field, what a base of this family and depth does not have."""
        bad = [i for i in self.leave_out if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(f"leave_out: the base has layers 0..{num_layers - 1}, got {bad}")
        if hidden_size is not None:
            self.check_sizes(hidden_size)

    def check_sizes(self, hidden_size: int) -> None:
        """Refuse, naming the field, sizes this width cannot have."""
        self.bottleneck_size(hidden_size)

    @property
    def placements(self) -> tuple[Placement, ...]:
        return tuple(p for p, on in zip(PLACEMENTS, (self.mh_adapter, self.output_adapter), strict=True) if on)

    def projection(self, in_features: int, out_features: int, shared: Callable[[], Any]) -> nn.Module:
        """W_down or W_up: a plain linear here; Compacter's config gives a PHM layer (`composer.compacter`).
        Serving reads its `weight` [out, in] and `bias`, whatever computes them."""
        return Linear(in_features, out_features)

    def shared_parameters(self, hidden_size: int) -> nn.ParameterDict | None:
        """Parameters one adapter shares across its layers (Compacter's PHM rule); None: none."""
        return None

    def bottleneck_size(self, hidden_size: int) -> int:
        """AdapterHub floors H / reduction_factor; a bottleneck of zero is refused, not clamped."""
        size = int(hidden_size // self.reduction_factor)
        if size < 1:
            raise ConfigError(
                f"reduction_factor {self.reduction_factor} leaves a bottleneck of size {size} "
                f"for hidden size {hidden_size}; use a factor <= {hidden_size}"
            )
        return size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["leave_out"] = list(self.leave_out)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BottleneckConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown bottleneck config fields: {unknown}")
        return cls(**data)


PRESETS: dict[str, dict[str, Any]] = {
    # Pfeiffer et al. 2020: after the FFN only.
    "seq_bn": dict(original_ln_before=True, non_linearity="relu", reduction_factor=16),
    # Houlsby et al. 2019: after attention and after the FFN.
    "double_seq_bn": dict(
        mh_adapter=True, output_adapter=True, original_ln_before=False, non_linearity="swish", reduction_factor=16
    ),
    # He et al. 2021: parallel to the FFN, scaled.
    "par_bn": dict(
        original_ln_before=False,
        is_parallel=True,
        scaling=4.0,
        reduction_factor=2,
        non_linearity="relu",
        init_weights="mam_adapter",
    ),
    "scaled_par_bn": dict(
        original_ln_before=False,
        is_parallel=True,
        scaling="learned",
        reduction_factor=2,
        non_linearity="relu",
        init_weights="mam_adapter",
    ),
}


class BottleneckLayer(nn.Module):
    def __init__(self, cfg: BottleneckConfig, hidden_size: int, shared: Callable[[], Any] = lambda: None):
        super().__init__()
        self.cfg = cfg
        size = cfg.bottleneck_size(hidden_size)
        self.norm_before = nn.LayerNorm(hidden_size) if cfg.ln_before else None
        self.down = cfg.projection(hidden_size, size, shared)
        self.act = activation(cfg.non_linearity)
        self.up = cfg.projection(size, hidden_size, shared)
        if cfg.scaling == "learned":
            self.scaling: nn.Parameter | float = nn.Parameter(torch.ones(1))
        else:
            self.scaling = float(cfg.scaling)
        self.norm_after = nn.LayerNorm(hidden_size) if cfg.ln_after else None
        self.dropout = nn.Dropout(cfg.dropout)
        if not next(self.down.parameters()).is_meta:  # built on meta, it is about to be given its weights
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if not isinstance(self.down, Linear):  # a projection of another form initialises itself
            return
        with torch.no_grad():
            scheme = self.cfg.init_weights
            for lin in (self.down, self.up):
                nn.init.zeros_(lin.bias)
            if scheme == "bert":
                self.down.weight.normal_(0.0, 0.02)
                self.up.weight.normal_(0.0, 0.02)
            elif scheme == "mam_adapter":
                nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
                nn.init.zeros_(self.up.weight)
            else:  # houlsby
                for lin in (self.down, self.up):
                    nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2)

    # -- the three phases, as in the reference -------------------------------------------
    def pre(
        self, x: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module, plain: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (adapter input, adapter residual). `plain`: `layer_norm(x + r)` where the caller has it."""
        if self.cfg.is_parallel:
            return r, r
        h = x
        if self.cfg.original_ln_before:
            h = layer_norm(x + r) if plain is None else plain
        return h, (x if self.cfg.residual_before_ln else h)

    def delta(self, h: torch.Tensor) -> torch.Tensor:
        """The scaled bottleneck output `s * f(h W_down) W_up` (before any residual)."""
        if self.norm_before is not None:
            h = self.norm_before(h)
        up = self.up(self.act(self.down(h)))
        up = up if isinstance(self.scaling, float) and self.scaling == 1.0 else up * self.scaling
        return self.dropout(up) if self.training else up  # in eval a dropout is the identity: one op fewer a site

    def finish(self, up: torch.Tensor, adapter_residual: torch.Tensor) -> torch.Tensor:
        """Apply the adapter's own residual and optional LayerNorm to a bottleneck output."""
        if self.cfg.is_parallel:
            return self.norm_after(up) if self.norm_after is not None else up
        out = up
        if self.cfg.adapter_residual_before_ln:
            out = out + adapter_residual
        if self.norm_after is not None:
            out = self.norm_after(out)
        if not self.cfg.adapter_residual_before_ln:
            out = out + adapter_residual
        return out

    def post(self, out: torch.Tensor, x: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module) -> torch.Tensor:
        if self.cfg.is_parallel:
            out = out + x
        if self.cfg.original_ln_after:
            out = layer_norm(out + r)
        return out

    def forward(
        self, x: torch.Tensor, r: torch.Tensor, layer_norm: nn.Module, plain: torch.Tensor | None = None
    ) -> torch.Tensor:
        h, res = self.pre(x, r, layer_norm, plain)
        return self.post(self.finish(self.delta(h), res), x, r, layer_norm)


class BottleneckAdapter(nn.Module):
    """All sites of one adapter across the encoder's layers."""

    slot = "site"  # it runs where a sublayer ends (the scope's site handler)

    @staticmethod
    def route(adapters: list[BottleneckAdapter | None]) -> Callable[..., torch.Tensor]:
        """The site handler for a batch whose row i runs adapter i (None: the bare base)."""
        present = [a for a in adapters if a is not None]
        if len(adapters) == 1 or all(a is present[0] for a in adapters):
            return routing.single(present[0])
        return routing.mixed(adapters)

    def __init__(self, cfg: BottleneckConfig, hidden_size: int, num_layers: int):
        super().__init__()
        self.cfg = cfg
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        shared = cfg.shared_parameters(hidden_size)
        if shared is not None:
            self.shared = shared  # read at each call (loading with assign=True replaces the parameters)
        self.sites = nn.ModuleDict(
            {
                site_key(i, p): BottleneckLayer(cfg, hidden_size, lambda: self.shared)
                for i in range(num_layers)
                if i not in cfg.leave_out
                for p in PLACEMENTS
                if p in cfg.placements
            }
        )

    @staticmethod
    def route_tree(
        tree: Any, adapters: dict[str, BottleneckAdapter], fused: dict[str, Any] | None = None
    ) -> Callable[..., torch.Tensor]:
        """The site handler of a Stack/Average tree over these adapters (`composer.bottleneck.trees`), and the
        plans of the fusions it runs (`fused`). An Average's members must have their layers at the same sites,
        as adapters 1.3.0 requires."""

        def check(node: Any, where: str) -> None:
            if isinstance(node, str | Fuse):
                return
            if isinstance(node, Average):
                keys = {frozenset(adapters[n].sites) for n in leaves(node)}
                if len(keys) != 1:
                    raise ConfigError(f"{where}: Average members have different sites: {leaves(node)}")
            for i, child in enumerate(node.children):
                check(child, f"{where}[{i}]")

        if isinstance(tree, BatchSplit):
            for i, row in enumerate(tree.adapters):
                if row is not None:
                    check(row, f"row {i}")
            return trees.batch_split(tree.adapters, adapters, fused)
        check(tree, type(tree).__name__.lower())
        return trees.tree(tree, adapters, fused)

    def layers(self) -> list[int]:
        """The layers this adapter has a site in (all but `leave_out`)."""
        return [i for i in range(self.num_layers) if i not in self.cfg.leave_out]

    def site(self, layer: int, placement: Placement) -> BottleneckLayer | None:
        key = site_key(layer, placement)
        return self.sites[key] if key in self.sites else None  # type: ignore[return-value]
