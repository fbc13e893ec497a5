"""Export the adapter family's artifacts in AdapterHub `adapters` 1.3.0 and PEFT 0.21 layouts.

The inverse of `hub.py`, `lora_import.py` and `fusion_artifacts.import_adapterhub_fusion`: the
directories load in the reference libraries and give the same logits (scripts/parity/check_exports.py
checks that in the parity venv; tests/composer/test_exports.py holds us to its checked-in outputs).

What a format cannot represent is refused (ConfigError) rather than changed: a head is exported only
when the reference computes the same head (first-token pooling; for PEFT a dense + tanh layer, which
goes into the pooler via `modules_to_save`), and a module whose head cannot be exported is exported
without it only when the caller says so (`with_head=False`).
"""

from __future__ import annotations

import torch

from composer.adapters.artifacts import AdapterArtifact
from composer.adapters.config import BottleneckConfig
from composer.adapters.fusion_artifacts import FusionArtifact
from composer.adapters.hub import BN_FIELDS
from composer.adapters.lora import LoraConfig, site_name
from composer.errors import ConfigError
from composer.exporting import Target, exportable_head, hub_head, hub_meta, peft_head, to_json
from composer.safetensors_io import tensors_to_bytes


def _split(art: AdapterArtifact) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    module = {k[len("adapter.") :]: v for k, v in art.tensors.items() if k.startswith("adapter.")}
    head = {k[len("head.") :]: v for k, v in art.tensors.items() if k.startswith("head.")}
    return module, head


def bottleneck_to_hub(
    art: AdapterArtifact, target: Target, name: str | None = None, with_head: bool = True
) -> dict[str, bytes]:
    cfg: BottleneckConfig = art.config  # type: ignore[assignment]
    name = name or art.name
    raw = {f: getattr(cfg, f) for f in BN_FIELDS} | {"leave_out": list(cfg.leave_out)}  # bottleneck: no "architecture"
    down = 1 if cfg.ln_before else 0
    table = {
        "down": f"adapter_down.{down}",
        "up": "adapter_up",
        "norm_before": "adapter_down.0",
        "norm_after": "adapter_norm_after",
    }
    module, head = _split(art)
    weights = {}
    for key, value in module.items():  # sites.L{i}_{placement}.{param}
        _, site, *param = key.split(".")
        layer, placement = site[1:].split("_", 1)
        where = "attention.output" if placement == "attention" else "output"
        local = "scaling" if param == ["scaling"] else f"{table[param[0]]}.{param[1]}"
        weights[f"{target.prefix}.encoder.layer.{layer}.{where}.adapters.{name}.{local}"] = value
    files = {
        "adapter_config.json": to_json({**hub_meta(name, target, art.hidden_size), "config": raw}),
        "adapter.safetensors": tensors_to_bytes(weights),
    }
    if exportable_head(art.head, with_head, f"adapter {art.name!r}"):
        files.update(hub_head(name, art.head, head, art.labels, target, art.hidden_size))  # type: ignore[arg-type]
    return files


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
    files = {
        "adapter_config.json": to_json({**hub_meta(art.name, target, art.hidden_size), "config": raw}),
        "adapter.safetensors": tensors_to_bytes(weights),
    }
    if exportable_head(art.head, with_head, f"adapter {art.name!r}"):
        files.update(hub_head(art.name, art.head, head, art.labels, target, art.hidden_size))  # type: ignore[arg-type]
    return files


def lora_to_peft(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: LoraConfig = art.config  # type: ignore[assignment]
    targets = cfg.targets(target.family)
    module, head = _split(art)
    modules_to_save, weights = peft_head(art.head, head, with_head, f"adapter {art.name!r}", "base_model.model.")
    weights = {k.replace("{prefix}", target.prefix): v for k, v in weights.items()}
    root = f"base_model.model.{target.prefix}." if modules_to_save else "base_model.model."
    layers = cfg.layers if cfg.layers is not None else tuple(range(target.num_layers))
    for layer in layers:
        for t in targets:
            for ab in ("A", "B"):
                weights[f"{root}encoder.layer.{layer}.{t}.lora_{ab}.weight"] = module[
                    f"sites.{site_name(layer, t)}.{ab}"
                ]
    config = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if modules_to_save else None,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "use_rslora": cfg.use_rslora,
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
    }
    return {"adapter_config.json": to_json(config), "adapter_model.safetensors": tensors_to_bytes(weights)}


def fusion_to_hub(
    art: FusionArtifact, members: list[AdapterArtifact], target: Target, with_head: bool = True
) -> dict[str, bytes]:
    """A folder per member (save_adapter) and one for the fusion and its head (save_adapter_fusion)."""
    cfg = art.config
    if cfg.shared or cfg.temperature != 1.0:
        raise ConfigError("fusion: AdapterHub fusions have one module per site and temperature 1")
    names = list(dict.fromkeys(m.name for m in members))
    if len(names) != len(members):
        names = [f"{m.name}_{i}" for i, m in enumerate(members)]
    files: dict[str, bytes] = {}
    for member, name in zip(members, names, strict=True):
        for fname, blob in bottleneck_to_hub(member, target, name=name, with_head=False).items():
            files[f"{name}/{fname}"] = blob
    fusion_name = ",".join(names)
    raw = {
        "key": True,
        "query": True,
        "value": cfg.value,
        "query_before_ln": False,
        "regularization": cfg.regularization > 0,
        "residual_before": False,
        "temperature": False,
        "value_before_softmax": True,
        "value_initialized": True,
        "dropout_prob": cfg.dropout,
    }
    weights = {}
    priors = [v for k, v in art.tensors.items() if k.endswith(".prior")]
    if any(bool(p.abs().max() > 0) for p in priors):
        raise ConfigError(
            "fusion: a warm-started fusion's member priors have no AdapterHub equivalent; use format=native"
        )
    for key, value in art.tensors.items():  # sites.L{i}_{placement}.{query|key|value}.{param}
        if key.endswith(".prior"):
            continue
        _, site, proj, param = key.split(".")
        layer, placement = site[1:].split("_", 1)
        where = "attention.output" if placement == "attention" else "output"
        weights[f"{target.prefix}.encoder.layer.{layer}.{where}.adapter_fusion_layer.{fusion_name}.{proj}.{param}"] = (
            value
        )
    meta = {**hub_meta(fusion_name, target, art.hidden_size), "adapter_names": names, "config": raw}
    files["fusion/adapter_fusion_config.json"] = to_json(meta)
    files["fusion/model_adapter_fusion.safetensors"] = tensors_to_bytes(weights)
    if exportable_head(art.head, with_head, f"fusion {art.name!r}"):
        head = hub_head(fusion_name, art.head, art.head_tensors, art.labels, target, art.hidden_size)  # type: ignore[arg-type]
        files.update({f"fusion/{k}": v for k, v in head.items()})
    return files
