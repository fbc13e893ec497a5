"""(IA)³: a vector per adapted linear. On a `feedforward` linear it scales the input, `linear(x * l)`; on the
others the output, `linear(x) * l` (bias included), which is PEFT 0.21's `IA3Config` (`ia3.Linear.forward`) and
AdapterHub 1.3's `IA3Config` (LoRA in `composition_mode="scale"`: `linear(x) * (lora_B * alpha)`). The vectors
start at 1, so training starts from the base.

The default targets are the paper's: keys, values, and the FFN's inner activation (the input of its second
linear). PEFT's default for BERT names `["key", "value", "output.dense"]` with `output.dense` feedforward,
which by suffix also matches `attention.output.dense`; we follow the paper and adapt the FFN's only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from composer.errors import ConfigError
from composer.injection import check_layers, config_from_dict, config_to_dict, linear_shapes, linear_targets
from composer.vectors import VectorAdapter

# per family: (targets, the targets among them that scale their input)
DEFAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bert": (("attention.self.key", "attention.self.value", "output.dense"), ("output.dense",)),
    "distilbert": (("attention.k_lin", "attention.v_lin", "ffn.lin2"), ("ffn.lin2",)),
}
for _family in ("roberta", "xlm-roberta", "electra"):
    DEFAULTS[_family] = DEFAULTS["bert"]


def _names(value: Any, what: str, empty: bool = False) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple) or (not value and not empty):
        raise ConfigError(f"{what} must be a {'' if empty else 'non-empty '}list of module names")
    return tuple(str(t) for t in value)


@dataclass(frozen=True)
class IA3Config:
    target_modules: tuple[str, ...] | None = None  # linear names or their last parts; None: the paper's
    feedforward_modules: tuple[str, ...] | None = None  # those whose input is scaled; None: the default's
    layers: tuple[int, ...] | None = None  # None: every layer

    fusable: ClassVar[bool] = False
    method: ClassVar[str] = "ia3"
    default_kind: ClassVar[str] = "ia3"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", _names(self.target_modules, "target_modules"))
        object.__setattr__(
            self, "feedforward_modules", _names(self.feedforward_modules, "feedforward_modules", empty=True)
        )
        if self.feedforward_modules is not None and self.target_modules is None:
            raise ConfigError("feedforward_modules: name target_modules too when you choose the feedforward ones")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def targets(self, family: str) -> tuple[tuple[str, ...], frozenset[str]]:
        """(the linears adapted in one layer, those among them whose input is scaled); unknown names refused."""
        if family not in DEFAULTS:
            raise ConfigError(f"(IA)³ has no default targets for {family!r}")
        default, default_ff = DEFAULTS[family]
        targets = linear_targets(family, self.target_modules or default)
        wanted_ff = self.feedforward_modules if self.target_modules is not None else default_ff
        ff = linear_targets(family, wanted_ff or (), "feedforward_modules") if wanted_ff else ()
        outside = sorted(set(ff) - set(targets))
        if outside:
            raise ConfigError(f"feedforward_modules: {outside} are not among the target_modules {list(targets)}")
        return targets, frozenset(ff)

    def check_base(self, family: str, num_layers: int, hidden_size: int | None = None) -> None:
        self.targets(family)
        check_layers(self.layers, num_layers)

    def build(self, model: Any) -> IA3Adapter:
        family, num_layers = model.base.family, model.base.num_layers
        targets, ff = self.targets(family)
        shapes = linear_shapes(model.encoder, family, targets, self.layers, num_layers)
        return IA3Adapter(self, {k: (i if k[1] in ff else o) for k, (i, o) in shapes.items()}, ff)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IA3Config:
        return config_from_dict(cls, data, "(IA)³")


class IA3Adapter(VectorAdapter):
    """The scaling vectors of one (IA)³ module."""

    neutral = 1.0

    def __init__(self, cfg: IA3Config, sizes: dict[tuple[int, str], int], feedforward: frozenset[str]):
        super().__init__(cfg, sizes)
        self.feedforward = feedforward

    def stage(self, key: tuple[int, str]) -> tuple[str, str]:
        return ("input" if key[1] in self.feedforward else "output", "mul")
