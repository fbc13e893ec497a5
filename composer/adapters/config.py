"""Typed, validated configs for bottleneck adapters, with the AdapterHub `adapters` 1.3.0 presets.

The field names follow AdapterHub's `BnConfig`, so that its `adapter_config.json` maps
onto ours field for field. Only the options that change numerics for BERT-family
encoders are kept; anything else in an imported config must be at its neutral value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from composer.adapters.lora import LoraConfig
from composer.errors import ConfigError
from composer.injection import PLACEMENTS, Placement

NonLinearity = Literal["relu", "swish", "silu", "gelu", "tanh", "leakyrelu"]
INIT_SCHEMES = ("bert", "mam_adapter", "houlsby")


@dataclass(frozen=True)
class BottleneckConfig:
    """A bottleneck adapter `A = f(H W_down) W_up + H`, placed after attention and/or the FFN."""

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

    def check_base(self, family: str, num_layers: int) -> None:
        """Refuse, naming the field, what a base of this family and depth does not have."""
        bad = [i for i in self.leave_out if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(f"leave_out: the base has layers 0..{num_layers - 1}, got {bad}")

    @property
    def placements(self) -> tuple[Placement, ...]:
        return tuple(p for p, on in zip(PLACEMENTS, (self.mh_adapter, self.output_adapter), strict=True) if on)

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


AdapterConfig: TypeAlias = BottleneckConfig | LoraConfig

# LoRA on the query and value projections (Hu et al. 2021), PEFT's default targets for BERT.
PRESETS["lora"] = {"method": "lora"}


def preset(name: str, **overrides: Any) -> AdapterConfig:
    """Build a config from a preset name, with field overrides validated like any config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown adapter preset {name!r}; known presets: {sorted(PRESETS)}")
    fields = {**PRESETS[name], **overrides}
    if fields.pop("method", "bottleneck") == "lora":
        return LoraConfig.from_dict(fields)
    return BottleneckConfig.from_dict(fields)


def method_of(cfg: AdapterConfig) -> str:
    """The `method` an artifact's config records: "bottleneck" or "lora"."""
    return "bottleneck" if isinstance(cfg, BottleneckConfig) else "lora"


def config_from(method: str, data: dict[str, Any]) -> AdapterConfig:
    if method == "bottleneck":
        return BottleneckConfig.from_dict(data)
    if method == "lora":
        return LoraConfig.from_dict(data)
    raise ConfigError(f"unsupported adapter method {method!r}; known: bottleneck, lora")
