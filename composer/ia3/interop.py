"""(IA)³ in PEFT 0.21 (`peft_type: IA3`) and AdapterHub 1.3 (`IA3Config`, a LoRA in `composition_mode="scale"`)
layouts, both directions.

PEFT stores `...layer.<i>.<linear>.ia3_l` as [out, 1] on the linears it scales at the output and [1, in] on the
`feedforward_modules`, whose input it scales: the shape says which. AdapterHub stores `...loras.<name>.lora_B`
[out, 1] and scales outputs only, by `lora_B * alpha` (folded into our vector on import). Options that change
the numerics and that we do not implement are refused naming the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from composer.adapter_artifact import AdapterArtifact, split_tensors
from composer.errors import ArtifactError, ConfigError
from composer.exporting import (
    CONVERT_HINT,
    Target,
    hub_files,
    peft_head,
    read_hub_head,
    to_json,
)
from composer.heads import peft_seq_cls_head
from composer.ia3.modules import IA3Config
from composer.injection import site_name
from composer.method import json_config
from composer.safetensors_io import read_tensors, tensors_to_bytes

_PEFT_KEY = re.compile(r"(?:^|\.)(?:(\w+)\.)?(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.ia3_l(?:\.weight)?$")
_HUB_KEY = re.compile(r"(?:^|\.)(?:(\w+)\.)?(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.loras\.[^.]+\.lora_B$")
_FAMILY = {"bert": "bert", "distilbert": "distilbert", "electra": "electra"}
_WIDE_OUT, _WIDE_IN = {"intermediate.dense", "ffn.lin1"}, {"output.dense", "ffn.lin2"}  # the FFN's linears
_HUB_ATTN = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value"}


def _collect(tensors: dict[str, torch.Tensor], key_re: re.Pattern[str], where: str):  # type: ignore[no-untyped-def]
    """{(layer, linear): (vector, scales the input)}, and the model type the keys name."""
    found: dict[tuple[int, str], tuple[torch.Tensor, bool]] = {}
    families: set[str] = set()
    for key, value in tensors.items():
        m = key_re.search(key)
        if m is None:
            continue
        if m.group(1):
            families.add(m.group(1))
        if value.dim() != 2 or 1 not in value.shape:
            raise ArtifactError(f"{where}: {key} has shape {list(value.shape)}; (IA)³ vectors are [n, 1] or [1, n]")
        found[(int(m.group(2)), m.group(3))] = (value.flatten(), value.shape[0] == 1 and value.shape[1] != 1)
    if not found:
        raise ArtifactError(f"{where}: no (IA)³ vectors found")
    return found, _FAMILY.get(families.pop()) if len(families) == 1 else None


def _artifact(found, meta_name: str, model_type, head, labels, head_tensors, source: str) -> AdapterArtifact:  # type: ignore[no-untyped-def]
    names = tuple(sorted({n for _, n in found}))
    ff = tuple(sorted({n for (_, n), (_, is_ff) in found.items() if is_ff}))
    layers = tuple(sorted({i for i, _ in found}))
    per_layer = {i: {n for j, n in found if j == i} for i in layers}
    if any(v != set(names) for v in per_layer.values()):
        raise ArtifactError(f"the layers adapt different linears ({per_layer}); one set for every layer is supported")
    tensors = {f"adapter.vectors.{site_name(i, n)}": v for (i, n), (v, _) in found.items()}
    tensors.update(head_tensors)
    hidden = next(  # a vector the model's width sizes: not the FFN's wide side
        int(v.numel())
        for (_, n), (v, f) in found.items()
        if not (n in _WIDE_OUT and not f) and not (n in _WIDE_IN and f)
    )
    return AdapterArtifact(
        name=meta_name,
        config=IA3Config(target_modules=names, feedforward_modules=ff, layers=layers),
        hidden_size=hidden,
        tensors=tensors,
        head=head,
        labels=labels,
        model_type=model_type,
        kind="ia3",
        source=source,
    )


def import_peft(files: dict[str, bytes], directory: Path, base_dir: str | None) -> AdapterArtifact:
    if "adapter_model.bin" in files and "adapter_model.safetensors" not in files:
        raise ArtifactError("adapter_model.bin is a pickle and is refused; save the PEFT model with safetensors")
    meta = json_config(files, "adapter_config.json")
    if meta.get("fan_in_fan_out"):
        raise ConfigError("fan_in_fan_out=True is not supported (BERT-family linears are not Conv1D)")
    if "adapter_model.safetensors" not in files:
        raise ArtifactError("adapter_model.safetensors is missing")
    raw = read_tensors(directory / "adapter_model.safetensors")
    found, model_type = _collect(raw, _PEFT_KEY, "PEFT adapter_model.safetensors")
    head = peft_seq_cls_head(raw, base_dir) if meta.get("task_type") == "SEQ_CLS" else None
    head_cfg, head_tensors = (head[0], {f"head.{k}": v for k, v in head[1].items()}) if head else (None, {})
    return _artifact(found, directory.name, model_type, head_cfg, None, head_tensors, "peft")


def import_adapterhub(files: dict[str, bytes], directory: Path) -> AdapterArtifact:
    if "pytorch_adapter.bin" in files and "adapter.safetensors" not in files:
        raise ArtifactError(f"pytorch_adapter.bin is a pickle and is refused; {CONVERT_HINT}")
    meta = json_config(files, "adapter_config.json")
    raw: dict[str, Any] = meta.get("config") or {}
    for k, neutral in (("use_gating", False), ("use_dora", False), ("r", 1)):
        if raw.get(k, neutral) != neutral:
            raise ConfigError(f"AdapterHub adapter_config.json: {k}={raw[k]!r} is not supported (only {neutral!r})")
    if "adapter.safetensors" not in files:
        raise ArtifactError("adapter.safetensors is missing")
    found, model_type = _collect(read_tensors(directory / "adapter.safetensors"), _HUB_KEY, "AdapterHub adapter")
    alpha = float(raw.get("alpha", 1.0))
    found = {k: (v * alpha, False) for k, (v, _) in found.items()}  # AdapterHub scales outputs by lora_B * alpha
    head, labels, head_tensors = read_hub_head(directory)
    art = _artifact(found, str(meta.get("name") or directory.name), meta.get("model_type") or model_type, head,
                    labels, head_tensors, "adapterhub")  # fmt: skip
    return art


def _layers(cfg: IA3Config, target: Target) -> tuple[int, ...]:
    return cfg.layers if cfg.layers is not None else tuple(range(target.num_layers))


def to_peft(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: IA3Config = art.config  # type: ignore[assignment]
    targets, ff = cfg.targets(target.family)
    module, head = split_tensors(art)
    modules_to_save, weights = peft_head(art.head, head, with_head, f"adapter {art.name!r}", "base_model.model.")
    weights = {k.replace("{prefix}", target.prefix): v for k, v in weights.items()}
    root = f"base_model.model.{target.prefix}."
    layers = _layers(cfg, target)
    for layer in layers:
        for t in targets:
            v = module[f"vectors.{site_name(layer, t)}"]
            weights[f"{root}encoder.layer.{layer}.{t}.ia3_l"] = v.view(1, -1) if t in ff else v.view(-1, 1)

    def exact(names: list[str]) -> str:  # a regular expression PEFT full-matches: no suffix can catch another linear
        alternatives = "|".join(re.escape(n) for n in names)
        return rf".*\.layer\.({'|'.join(map(str, layers))})\.({alternatives})"

    config = {
        "peft_type": "IA3",
        "task_type": "SEQ_CLS" if modules_to_save else None,
        "target_modules": exact(list(targets)),
        "feedforward_modules": exact(sorted(ff)) if ff else [],
        "fan_in_fan_out": False,
        "init_ia3_weights": True,
        "modules_to_save": modules_to_save,
        "inference_mode": True,
        "base_model_name_or_path": target.name,
        "revision": None,
    }
    return {"adapter_config.json": to_json(config), "adapter_model.safetensors": tensors_to_bytes(weights)}


def to_hub(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: IA3Config = art.config  # type: ignore[assignment]
    targets, ff = cfg.targets(target.family)
    if ff:
        raise ConfigError(
            f"feedforward_modules: AdapterHub's (IA)³ scales outputs only, and this module scales the input of "
            f"{sorted(ff)}; export it with format=peft"
        )
    attn = {v: k for k, v in _HUB_ATTN.items()}
    other = set(targets) - set(attn) - {"intermediate.dense", "output.dense"}
    if other:
        raise ConfigError(
            f"target_modules: AdapterHub's (IA)³ cannot scale {sorted(other)}; export it with format=peft"
        )
    layers = _layers(cfg, target)
    raw = {
        "architecture": "lora",
        "selfattn_lora": any(t in attn for t in targets),
        "attn_matrices": [attn[t] for t in attn if t in targets],
        "intermediate_lora": "intermediate.dense" in targets,
        "output_lora": "output.dense" in targets,
        "r": 1,
        "alpha": 1,
        "dropout": 0.0,
        "leave_out": [i for i in range(target.num_layers) if i not in layers],
        "composition_mode": "scale",
        "init_weights": "ia3",
        "use_gating": False,
    }
    module, head = split_tensors(art)
    weights = {
        f"{target.prefix}.encoder.layer.{layer}.{t}.loras.{art.name}.lora_B": module[
            f"vectors.{site_name(layer, t)}"
        ].view(-1, 1)
        for layer in layers
        for t in targets
    }
    return hub_files(art, target, raw, weights, head, with_head)
