"""Compacter in AdapterHub 1.3's layout, both directions: a bottleneck adapter with `phm_layer: true`, whose
projections are `adapter_down.0.{W_left,W_right,b}` / `adapter_up.{...}`, and its rule at
`<model>.shared_parameters.<name>.phm_rule`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from composer.adapter_artifact import AdapterArtifact, split_tensors
from composer.bottleneck.hub import BN_FIELDS
from composer.compacter.modules import CompacterConfig
from composer.errors import ArtifactError, ConfigError
from composer.exporting import CONVERT_HINT, Target, hub_files, read_hub_head
from composer.injection import site_key
from composer.method import json_config
from composer.safetensors_io import read_tensors

PHM_FIELDS = (
    "phm_dim",
    "phm_rank",
    "factorized_phm_W",
    "shared_phm_rule",
    "phm_c_init",
    "phm_init_range",
    "hypercomplex_nonlinearity",
    "learn_phm",
    "phm_bias",
)
_NEUTRAL = {"factorized_phm_rule": False, "shared_W_phm": False, "use_gating": False, "inv_adapter": None}
_SITE = re.compile(r"(?:^|\.)layer\.(\d+)\.(attention\.output|output)\.adapters\.[^.]+\.adapter_(down\.0|up)\.(\w+)$")
_RULE = re.compile(r"(?:^|\.)shared_parameters\.[^.]+\.phm_rule$")


def import_adapterhub(files: dict[str, bytes], directory: Path) -> AdapterArtifact:
    if "pytorch_adapter.bin" in files and "adapter.safetensors" not in files:
        raise ArtifactError(f"pytorch_adapter.bin is a pickle and is refused; {CONVERT_HINT}")
    meta = json_config(files, "adapter_config.json")
    raw: dict[str, Any] = meta.get("config") or {}
    for k, neutral in _NEUTRAL.items():
        if raw.get(k, neutral) != neutral:
            raise ConfigError(f"AdapterHub Compacter option {k}={raw[k]!r} is not supported (only {neutral!r})")
    if raw.get("ln_before") or raw.get("ln_after") or raw.get("is_parallel"):
        raise ConfigError("ln_before, ln_after and is_parallel are not supported with phm_layer")
    data = {k: raw[k] for k in (*BN_FIELDS, *PHM_FIELDS) if k in raw}
    data["scaling"] = float(data.get("scaling", 1.0))
    cfg = CompacterConfig.from_dict(data)
    if "adapter.safetensors" not in files:
        raise ArtifactError("adapter.safetensors is missing")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in read_tensors(directory / "adapter.safetensors").items():
        if _RULE.search(key):
            tensors["adapter.shared.phm_rule"] = value
            continue
        m = _SITE.search(key)
        if m is None:
            raise ArtifactError(f"unexpected AdapterHub Compacter weight {key!r}")
        placement = "attention" if m.group(2) == "attention.output" else "ffn"
        proj = "down" if m.group(3) == "down.0" else "up"
        tensors[f"adapter.sites.{site_key(int(m.group(1)), placement)}.{proj}.{m.group(4)}"] = value
    if "adapter.shared.phm_rule" not in tensors:
        raise ArtifactError("the Compacter's shared phm_rule is missing from adapter.safetensors")
    head, labels, head_tensors = read_hub_head(directory)
    tensors.update(head_tensors)
    return AdapterArtifact(
        name=str(meta.get("name") or directory.name),
        config=cfg,
        hidden_size=int(meta["hidden_size"]),
        tensors=tensors,
        head=head,
        labels=labels,
        model_type=meta.get("model_type"),
        kind="compacter",
        source="adapterhub",
    )


def to_hub(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: CompacterConfig = art.config  # type: ignore[assignment]
    raw = {f: getattr(cfg, f) for f in (*BN_FIELDS, *PHM_FIELDS)} | {"leave_out": list(cfg.leave_out)}
    raw |= {"phm_layer": True, "factorized_phm_rule": False, "shared_W_phm": False}
    module, head = split_tensors(art)
    weights = {f"{target.prefix}.shared_parameters.{art.name}.phm_rule": module["shared.phm_rule"]}
    for key, value in module.items():  # sites.L{i}_{placement}.{down|up}.{param}
        if key.startswith("shared."):
            continue
        _, site, proj, param = key.split(".")
        layer, placement = site[1:].split("_", 1)
        where = "attention.output" if placement == "attention" else "output"
        local = "adapter_down.0" if proj == "down" else "adapter_up"
        weights[f"{target.prefix}.encoder.layer.{layer}.{where}.adapters.{art.name}.{local}.{param}"] = value
    return hub_files(art, target, raw, weights, head, with_head)
