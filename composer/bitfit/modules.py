"""BitFit: the bias terms of the encoder's linear projections train, nothing else. A module stores the
deltas to the frozen biases, `linear(x) + δ`, so rows on different BitFit modules (and rows of other methods)
share the base's weights in one forward: each row gathers its own δ, 0 for a row without one.

The paper trains every bias, LayerNorm's included. Here the linears' biases train (query, key, value,
attention output, FFN in and out: 6 per layer); LayerNorm's stay frozen, since serving per row gathers deltas
where a linear runs. The paper's own ablation keeps most of the gain with the query and FFN-in biases alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from composer.errors import ConfigError
from composer.injection import FAMILIES, check_layers, config_from_dict, config_to_dict, linear_shapes, linear_targets
from composer.vectors import VectorAdapter


@dataclass(frozen=True)
class BitFitConfig:
    target_modules: tuple[str, ...] | None = None  # linears whose biases train; None: every linear of a layer
    layers: tuple[int, ...] | None = None  # None: every layer

    fusable: ClassVar[bool] = False
    method: ClassVar[str] = "bitfit"
    default_kind: ClassVar[str] = "bitfit"

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            if isinstance(self.target_modules, str) or not self.target_modules:
                raise ConfigError("target_modules must be a non-empty list of module names")
            object.__setattr__(self, "target_modules", tuple(str(t) for t in self.target_modules))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def targets(self, family: str) -> tuple[str, ...]:
        return linear_targets(family, self.target_modules or FAMILIES[family].linears)

    def check_base(self, family: str, num_layers: int, hidden_size: int | None = None) -> None:
        self.targets(family)
        check_layers(self.layers, num_layers)

    def build(self, model: Any) -> BitFitAdapter:
        family, num_layers = model.base.family, model.base.num_layers
        shapes = linear_shapes(model.encoder, family, self.targets(family), self.layers, num_layers)
        return BitFitAdapter(self, {k: o for k, (_, o) in shapes.items()})

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitFitConfig:
        return config_from_dict(cls, data, "BitFit")


class BitFitAdapter(VectorAdapter):
    """The bias deltas of one BitFit module."""

    neutral = 0.0

    def act(
        self, key: tuple[int, str], x: torch.Tensor, linear: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor
    ) -> torch.Tensor:
        return linear(x) + v
