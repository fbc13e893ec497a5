"""Import LoRA artifacts from PEFT 0.21 and AdapterHub `adapters` 1.3.0 onto our `LoraAdapter`.

PEFT: `adapter_config.json` (`peft_type: LORA`) + `adapter_model.safetensors` with
`...layer.<i>.<linear>.lora_A.weight` / `lora_B.weight`, and for SEQ_CLS the classifier in
`modules_to_save`. AdapterHub: `adapter_config.json` (`config.architecture: lora`) +
`adapter.safetensors` with `...layer.<i>.<linear>.loras.<name>.lora_A` / `lora_B`, and an optional head.

The linears an artifact adapts are read from its weights, so the imported config names them
exactly. Options that change the numerics and that we do not implement (DoRA, biases, per-module
ranks, gating) are refused naming the field, never dropped silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from composer.adapter_artifact import AdapterArtifact
from composer.errors import ArtifactError, ConfigError
from composer.exporting import CONVERT_HINT, read_hub_head
from composer.heads import peft_seq_cls_head
from composer.lora.modules import LoraConfig, site_name
from composer.method import json_config
from composer.safetensors_io import read_tensors

_PEFT_KEY = re.compile(r"(?:^|\.)(?:(\w+)\.)?(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.lora_([AB])\.weight$")
_HUB_KEY = re.compile(r"(?:^|\.)(?:(\w+)\.)?(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.loras\.[^.]+\.lora_([AB])$")
# model attribute names in the checkpoint keys -> our family names (RoBERTa's also serves XLM-R: not decided)
_FAMILY = {"bert": "bert", "distilbert": "distilbert", "electra": "electra"}
# PEFT options that must be at their neutral value
_PEFT_NEUTRAL: dict[str, Any] = {
    "use_dora": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "layer_replication": None,
    "use_qalora": False,
    "lora_bias": False,
    "target_parameters": None,
    "alora_invocation_tokens": None,
    "trainable_token_indices": None,
    "use_bdlora": None,
}
_HUB_NEUTRAL: dict[str, Any] = {
    "composition_mode": "add",
    "use_gating": False,
    "use_dora": False,
    "vera_d": None,
    "vera_b": None,
}


def _neutral(raw: dict[str, Any], table: dict[str, Any], where: str) -> None:
    for k, neutral in table.items():
        value = raw.get(k, neutral)
        if value != neutral and not (neutral == {} and not value):
            raise ConfigError(f"{where}: {k}={value!r} is not supported (only {neutral!r})")


def _rank(r: Any) -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"r (the LoRA rank) must be an integer >= 1, got {r!r}")
    return r


def _weights(tensors: dict[str, torch.Tensor], key_re: re.Pattern[str], r: int, where: str):  # type: ignore[no-untyped-def]
    """(our tensors, linear names, layers, model type) from a foreign checkpoint's LoRA keys."""
    out: dict[str, torch.Tensor] = {}
    names: set[str] = set()
    layers: set[int] = set()
    families: set[str] = set()
    for key, value in tensors.items():
        m = key_re.search(key)
        if m is None:
            continue
        attr, layer, linear, ab = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if attr:
            families.add(attr)
        expected_dim = 0 if ab == "A" else 1
        if value.dim() != 2 or value.shape[expected_dim] != r:
            raise ArtifactError(f"{where}: r={r} but {key} has shape {list(value.shape)}")
        names.add(linear)
        layers.add(layer)
        out[f"adapter.sites.{site_name(layer, linear)}.{ab}"] = value
    if not out:
        raise ArtifactError(f"{where}: no LoRA weights found")
    model_type = _FAMILY.get(families.pop()) if len(families) == 1 else None
    return out, tuple(sorted(names)), tuple(sorted(layers)), model_type


def _hidden_size(tensors: dict[str, torch.Tensor], names: tuple[str, ...]) -> int:
    """The model width: the input size of a query/key/value projection's A."""
    for k, v in tensors.items():
        if k.endswith(".A") and any(n in k for n in ("query", "key", "value", "q_lin", "k_lin", "v_lin")):
            return int(v.shape[1])
    return int(next(v.shape[1] for k, v in tensors.items() if k.endswith(".A")))


def import_peft_lora(files: dict[str, bytes], directory: Path, base_dir: str | None) -> AdapterArtifact:
    if "adapter_model.bin" in files and "adapter_model.safetensors" not in files:
        raise ArtifactError("adapter_model.bin is a pickle and is refused; save the PEFT model with safetensors")
    meta = json_config(files, "adapter_config.json")
    if meta.get("peft_type") != "LORA":
        raise ConfigError(f"peft_type: only LORA imports as a LoRA, got {meta.get('peft_type')!r}")
    _neutral(meta, _PEFT_NEUTRAL, "PEFT adapter_config.json")
    if isinstance(meta.get("target_modules"), str):
        raise ConfigError("target_modules: a regular expression is not supported; list the module names")
    r = _rank(meta.get("r"))
    if "adapter_model.safetensors" not in files:
        raise ArtifactError("adapter_model.safetensors is missing")
    raw = read_tensors(directory / "adapter_model.safetensors")
    tensors, names, layers, model_type = _weights(raw, _PEFT_KEY, r, "PEFT adapter_model.safetensors")
    ltt = meta.get("layers_to_transform")
    cfg = LoraConfig(
        r=r,
        alpha=float(meta.get("lora_alpha", 8)),
        dropout=float(meta.get("lora_dropout") or 0.0),
        target_modules=names,
        layers=tuple([ltt] if isinstance(ltt, int) else ltt) if ltt is not None else None,
        use_rslora=bool(meta.get("use_rslora", False)),
    )
    head = peft_seq_cls_head(raw, base_dir) if meta.get("task_type") == "SEQ_CLS" else None
    head_cfg = None
    if head is not None:
        head_cfg, head_weights = head
        tensors.update({f"head.{k}": v for k, v in head_weights.items()})
    return AdapterArtifact(
        name=directory.name,
        config=cfg,
        hidden_size=_hidden_size(tensors, names),
        tensors=tensors,
        head=head_cfg,
        model_type=model_type,
        kind="lora",
        source="peft",
    )


def import_adapterhub_lora(files: dict[str, bytes], directory: Path) -> AdapterArtifact:
    if "pytorch_adapter.bin" in files and "adapter.safetensors" not in files:
        raise ArtifactError(f"pytorch_adapter.bin is a pickle and is refused; {CONVERT_HINT}")
    meta = json_config(files, "adapter_config.json")
    raw = meta.get("config") or {}
    if raw.get("architecture") != "lora":
        raise ConfigError(f"architecture: only 'lora' imports as a LoRA, got {raw.get('architecture')!r}")
    _neutral(raw, _HUB_NEUTRAL, "AdapterHub adapter_config.json")
    r = _rank(raw.get("r", 8))
    if "adapter.safetensors" not in files:
        raise ArtifactError("adapter.safetensors is missing")
    weights = read_tensors(directory / "adapter.safetensors")
    tensors, names, layers, model_type = _weights(weights, _HUB_KEY, r, "AdapterHub adapter.safetensors")
    cfg = LoraConfig(
        r=r,
        alpha=float(raw.get("alpha", 8)),
        dropout=float(raw.get("dropout") or 0.0),
        target_modules=names,
        layers=layers if raw.get("leave_out") else None,
    )
    head, labels, head_tensors = read_hub_head(directory)
    tensors.update(head_tensors)
    return AdapterArtifact(
        name=str(meta.get("name") or directory.name),
        config=cfg,
        hidden_size=int(meta.get("hidden_size") or _hidden_size(tensors, names)),
        tensors=tensors,
        head=head,
        labels=labels,
        model_type=meta.get("model_type") or model_type,
        kind="lora",
        source="adapterhub",
    )
