"""Compacter's config: AdapterHub 1.3's bottleneck fields with `phm_layer` on. Compacter sits after attention
and after the FFN (as `double_seq_bn`); Compacter++ after the FFN only (as `seq_bn`); both gelu, reduction 32.

A Compacter is a bottleneck adapter: it serves in the same mixed forwards as ST-As, stacks, averages and fuses
like them; only its projections are PHM layers (`composer.compacter.phm`). The rule (n×n×n) is shared by all
layers and both projections of one adapter (`shared_phm_rule`), stored once as `shared.phm_rule`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from composer.bottleneck.modules import BottleneckConfig
from composer.compacter.phm import PHMLinear
from composer.errors import ConfigError


@dataclass(frozen=True)
class CompacterConfig(BottleneckConfig):
    method: ClassVar[str] = "compacter"
    default_kind: ClassVar[str] = "compacter"
    reduction_factor: float = 32.0
    non_linearity: Any = "gelu"
    phm_dim: int = 4
    phm_rank: int = 1
    factorized_phm_W: bool = True  # W_i = W_left_i W_right_i (Compacter); False: a full W_i (plain PHM)
    shared_phm_rule: bool = True
    phm_c_init: Literal["normal", "uniform"] = "normal"
    phm_init_range: float = 0.0001
    hypercomplex_nonlinearity: Literal["glorot-uniform", "glorot-normal", "normal"] = "glorot-uniform"
    learn_phm: bool = True
    phm_bias: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.phm_dim, bool) or not isinstance(self.phm_dim, int) or self.phm_dim < 1:
            raise ConfigError(f"phm_dim must be an integer >= 1, got {self.phm_dim!r}")
        if isinstance(self.phm_rank, bool) or not isinstance(self.phm_rank, int) or self.phm_rank < 1:
            raise ConfigError(f"phm_rank must be an integer >= 1, got {self.phm_rank!r}")
        if not self.shared_phm_rule:
            raise ConfigError("shared_phm_rule: only the shared rule (Compacter's, the default) is supported")
        if self.phm_c_init not in ("normal", "uniform"):
            raise ConfigError(f"phm_c_init must be normal or uniform, got {self.phm_c_init!r}")
        if self.hypercomplex_nonlinearity not in ("glorot-uniform", "glorot-normal", "normal"):
            raise ConfigError(f"unknown hypercomplex_nonlinearity {self.hypercomplex_nonlinearity!r}")

    def check_sizes(self, hidden_size: int) -> None:
        """phm_dim must divide the model width and the bottleneck (AdapterHub asserts it)."""
        super().check_sizes(hidden_size)
        size = self.bottleneck_size(hidden_size)
        if hidden_size % self.phm_dim or size % self.phm_dim:
            raise ConfigError(
                f"phm_dim: {self.phm_dim} must divide the hidden size ({hidden_size}) and the bottleneck "
                f"({size} = {hidden_size} // reduction_factor {self.reduction_factor:g})"
            )

    def build(self, model: Any) -> Any:
        self.check_sizes(model.base.hidden_size)
        return super().build(model)

    def projection(self, in_features: int, out_features: int, shared: Callable[[], Any]) -> nn.Module:
        return PHMLinear(in_features, out_features, self, shared)

    def shared_parameters(self, hidden_size: int) -> nn.ParameterDict:
        n = self.phm_dim
        rule = torch.empty(n, n, n)
        if not rule.is_meta:
            rule.normal_(0.0, self.phm_init_range) if self.phm_c_init == "normal" else rule.uniform_(-1, 1)
        return nn.ParameterDict({"phm_rule": nn.Parameter(rule, requires_grad=self.learn_phm)})


PRESETS: dict[str, dict[str, Any]] = {
    "compacter": dict(mh_adapter=True, output_adapter=True, original_ln_before=False),  # CompacterConfig
    "compacter++": dict(original_ln_before=True),  # CompacterPlusPlusConfig
}
