"""A LoRA in AdapterHub `LoRAConfig` and PEFT 0.21 layouts: the inverse of `imports.py`. What a layout cannot
represent is refused (ConfigError): a target AdapterHub cannot adapt, a head the reference computes differently."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_artifact import split_tensors as _split
from composer.errors import ConfigError
from composer.exporting import Target, hub_files, peft_head, to_json
from composer.lora.modules import LoraConfig, site_name
from composer.safetensors_io import tensors_to_bytes


def lora_to_hub(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: LoraConfig = art.config  # type: ignore[assignment]
    targets = cfg.targets(target.family)
    attn = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v"}
    other = set(targets) - set(attn) - {"intermediate.dense", "output.dense"}
    if other:
        raise ConfigError(f"target_modules: AdapterHub LoRA cannot adapt {sorted(other)}; export it with format=peft")
    layers = cfg.layers if cfg.layers is not None else tuple(range(target.num_layers))
    raw = {
        "architecture": "lora",
        "selfattn_lora": any(t in attn for t in targets),
        "attn_matrices": [attn[t] for t in attn if t in targets],
        "intermediate_lora": "intermediate.dense" in targets,
        "output_lora": "output.dense" in targets,
        "r": cfg.r,
        "alpha": cfg.scaling * cfg.r,
        "dropout": cfg.dropout,
        "leave_out": [i for i in range(target.num_layers) if i not in layers],
        "composition_mode": "add",
        "init_weights": "lora",
        "use_gating": False,
    }
    module, head = _split(art)
    weights = {}
    for layer in layers:
        for t in targets:
            for ab in ("A", "B"):
                v = module[f"sites.{site_name(layer, t)}.{ab}"]
                weights[f"{target.prefix}.encoder.layer.{layer}.{t}.loras.{art.name}.lora_{ab}"] = v
    return hub_files(art, target, raw, weights, head, with_head)


def lora_to_peft(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: LoraConfig = art.config  # type: ignore[assignment]
    module, _ = _split(art)

    def site(layer: int, linear: str) -> dict[str, torch.Tensor]:
        return {f"lora_{ab}.weight": module[f"sites.{site_name(layer, linear)}.{ab}"] for ab in ("A", "B")}

    fields = {"peft_type": "LORA", "r": cfg.r, "use_rslora": cfg.use_rslora}
    return peft_files(art, target, with_head, cfg, site, fields)


def peft_files(
    art: AdapterArtifact,
    target: Target,
    with_head: bool,
    cfg: Any,
    site: Callable[[int, str], dict[str, torch.Tensor]],
    fields: dict[str, Any],
) -> dict[str, bytes]:
    """A PEFT directory of the LoRA family (LORA, ADALORA): the head in `modules_to_save`, each adapted linear's
    tensors (`site(layer, linear)`: PEFT's key suffix -> tensor) under PEFT's keys, and the config, the method's
    own `fields` over what the family shares."""
    _, head = _split(art)
    modules_to_save, weights = peft_head(art.head, head, with_head, f"adapter {art.name!r}", "base_model.model.")
    weights = {k.replace("{prefix}", target.prefix): v for k, v in weights.items()}
    root = f"base_model.model.{target.prefix}." if modules_to_save else "base_model.model."
    targets = cfg.targets(target.family)
    for layer in cfg.layers if cfg.layers is not None else range(target.num_layers):
        for t in targets:
            for suffix, value in site(layer, t).items():
                weights[f"{root}encoder.layer.{layer}.{t}.{suffix}"] = value
    config = {
        "task_type": "SEQ_CLS" if modules_to_save else None,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": list(targets),
        "layers_to_transform": list(cfg.layers) if cfg.layers is not None else None,
        "layers_pattern": "layer" if cfg.layers is not None else None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "use_dora": False,
        "modules_to_save": modules_to_save,
        "inference_mode": True,
        "base_model_name_or_path": target.name,
        "revision": None,
        **fields,
    }
    return {"adapter_config.json": to_json(config), "adapter_model.safetensors": tensors_to_bytes(weights)}
