"""The adapter presets by name (AdapterHub's bottleneck presets, and `lora`) and the adapter config classes by
the `method` an artifact records. Like `composer.kinds`, this is where the methods come together: the
engine and each method package never import another method."""

from __future__ import annotations

from typing import Any, TypeAlias

from composer.bottleneck.modules import PRESETS as BOTTLENECK_PRESETS
from composer.bottleneck.modules import BottleneckConfig
from composer.errors import ConfigError
from composer.lora.modules import LoraConfig

AdapterConfig: TypeAlias = BottleneckConfig | LoraConfig
CONFIGS: dict[str, type[BottleneckConfig] | type[LoraConfig]] = {c.method: c for c in (BottleneckConfig, LoraConfig)}
# LoRA on the query and value projections (Hu et al. 2021), PEFT's default targets for BERT.
PRESETS: dict[str, dict[str, Any]] = {**BOTTLENECK_PRESETS, "lora": {"method": "lora"}}


def preset(name: str, **overrides: Any) -> AdapterConfig:
    """Build a config from a preset name, with field overrides validated like any config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown adapter preset {name!r}; known presets: {sorted(PRESETS)}")
    fields = {**PRESETS[name], **overrides}
    return config_from(fields.pop("method", "bottleneck"), fields)


def config_from(method: str, data: dict[str, Any]) -> AdapterConfig:
    if method not in CONFIGS:
        raise ConfigError(f"unsupported adapter method {method!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[method].from_dict(data)
