"""Import an AdapterHub `adapters` directory onto our modules.

Reads `adapter_config.json` + `adapter.safetensors`, and the optional head files
`head_config.json` + `model_head.safetensors`. `pytorch_adapter.bin` (a pickle) is
refused with instructions to convert it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from composer.adapter_artifact import AdapterArtifact
from composer.bottleneck.modules import BottleneckConfig, site_key
from composer.errors import ArtifactError, ConfigError
from composer.exporting import CONVERT_HINT, read_hub_head
from composer.safetensors_io import read_tensors

# Options of BnConfig that we do not implement; an import must have them at the neutral value.
_NEUTRAL = {
    "phm_layer": False,
    "use_gating": False,
    "inv_adapter": None,
    "cross_adapter": False,
    "stochastic_depth": 0.0,
}
BN_FIELDS = (  # the BnConfig fields we implement, by AdapterHub's names
    "mh_adapter",
    "output_adapter",
    "reduction_factor",
    "non_linearity",
    "original_ln_before",
    "original_ln_after",
    "residual_before_ln",
    "adapter_residual_before_ln",
    "ln_before",
    "ln_after",
    "is_parallel",
    "scaling",
    "init_weights",
    "dropout",
    "leave_out",
)
_KEY = re.compile(r"(?:^|\.)layer\.(\d+)\.(attention\.output|output)\.adapters\.[^.]+\.(.+)$")


def _config(raw: dict[str, Any]) -> BottleneckConfig:
    for k, neutral in _NEUTRAL.items():
        if raw.get(k, neutral) != neutral:
            raise ConfigError(f"AdapterHub option {k}={raw[k]!r} is not supported")
    if isinstance(raw.get("reduction_factor"), dict):
        raise ConfigError("per-layer reduction_factor mappings are not supported")
    if raw.get("residual_before_ln") == "post_add":
        raise ConfigError("residual_before_ln='post_add' is not supported")
    data = {k: raw[k] for k in BN_FIELDS if k in raw}
    if isinstance(data.get("scaling"), int):
        data["scaling"] = float(data["scaling"])
    return BottleneckConfig.from_dict(data)


def _param_name(rest: str, cfg: BottleneckConfig) -> str:
    down_idx = 1 if cfg.ln_before else 0
    table = {
        f"adapter_down.{down_idx}.weight": "down.weight",
        f"adapter_down.{down_idx}.bias": "down.bias",
        "adapter_up.weight": "up.weight",
        "adapter_up.bias": "up.bias",
        "scaling": "scaling",
        "adapter_norm_after.weight": "norm_after.weight",
        "adapter_norm_after.bias": "norm_after.bias",
    }
    if cfg.ln_before:
        table.update({"adapter_down.0.weight": "norm_before.weight", "adapter_down.0.bias": "norm_before.bias"})
    if rest not in table:
        raise ArtifactError(f"unexpected AdapterHub parameter {rest!r}")
    return table[rest]


def import_adapterhub(directory: str | Path) -> AdapterArtifact:
    d = Path(directory)
    if (d / "pytorch_adapter.bin").exists() and not (d / "adapter.safetensors").exists():
        raise ArtifactError(f"pytorch_adapter.bin is a pickle and is refused; {CONVERT_HINT}")
    meta = json.loads((d / "adapter_config.json").read_text())
    if "config" not in meta or "hidden_size" not in meta:
        raise ArtifactError(f"{d / 'adapter_config.json'} is not an AdapterHub adapter config")
    raw = meta["config"]
    if raw.get("architecture", "bottleneck") not in (None, "bottleneck"):
        raise ConfigError(f"only bottleneck adapters import from AdapterHub, got {raw.get('architecture')!r}")
    cfg = _config(raw)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in read_tensors(d / "adapter.safetensors").items():
        m = _KEY.search(key)
        if m is None:
            raise ArtifactError(f"unexpected AdapterHub weight {key!r}")
        layer, where, rest = int(m.group(1)), m.group(2), m.group(3)
        placement = "attention" if where == "attention.output" else "ffn"
        tensors[f"adapter.sites.{site_key(layer, placement)}.{_param_name(rest, cfg)}"] = value
    head, labels, head_tensors = read_hub_head(d)
    tensors.update(head_tensors)
    return AdapterArtifact(
        name=str(meta.get("name") or d.name),
        config=cfg,
        hidden_size=int(meta["hidden_size"]),
        tensors=tensors,
        head=head,
        labels=labels,
        base=None,
        model_type=meta.get("model_type"),
        source="adapterhub",
    )
