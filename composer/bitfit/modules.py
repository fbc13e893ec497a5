"""BitFit: the bias terms of the encoder's linear projections train, nothing else. A module stores the
deltas to the frozen biases, `linear(x) + δ`, so rows on different BitFit modules (and rows of other methods)
share the base's weights in one forward: each row gathers its own δ, 0 for a row without one.

The paper trains every bias, LayerNorm's included. Here the linears' biases train (query, key, value,
attention output, FFN in and out: 6 per layer); LayerNorm's stay frozen, since serving per row gathers deltas
where a linear runs. The paper's own ablation keeps most of the gain with the query and FFN-in biases alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from composer.injection import (
    LinearTargets,
    config_from_dict,
)
from composer.vectors import VectorAdapter


@dataclass(frozen=True)
class BitFitConfig(LinearTargets):
    target_modules: tuple[str, ...] | None = None  # linears whose biases train; None: every linear of a layer
    layers: tuple[int, ...] | None = None  # None: every layer

    fusable: ClassVar[bool] = False
    method: ClassVar[str] = "bitfit"
    default_kind: ClassVar[str] = "bitfit"

    def __post_init__(self) -> None:
        self.normalise_targets()

    def build(self, model: Any) -> BitFitAdapter:
        return BitFitAdapter(self, {k: o for k, (_, o) in self.adapted_shapes(model).items()})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitFitConfig:
        return config_from_dict(cls, data, "BitFit")


class BitFitAdapter(VectorAdapter):
    """The bias deltas of one BitFit module."""

    neutral = 0.0

    def stage(self, key: tuple[int, str]) -> tuple[str, str]:
        return ("output", "add")
