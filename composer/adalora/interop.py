"""AdaLoRA in PEFT 0.21's layout (`peft_type: ADALORA`), both ways.

PEFT saves the adapter pruned to the kept triplets: per adapted linear `...lora_A` [k, in], `lora_E` [k, 1],
`lora_B` [out, k], and `rank_pattern` in the config says, per linear (`<path>.lora_E`), which of the init_r
triplets were kept. Loading, PEFT rebuilds each linear at init_r, prunes it by that pattern and copies the
tensors in, keeping the scaling alpha / (init_r + 1e-5). Pruned tensors without their rank_pattern cannot be
read, and are refused naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from composer.adalora.modules import AdaLoraConfig
from composer.adapter_artifact import AdapterArtifact, split_tensors
from composer.errors import ArtifactError, ConfigError
from composer.exporting import Target
from composer.heads import peft_seq_cls_head
from composer.injection import FAMILIES, site_name
from composer.lora.export import peft_files
from composer.method import json_config
from composer.safetensors_io import read_tensors

_KEY = re.compile(r"(?:^|\.)(?:(\w+)\.)?(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.lora_([AEB])$")
_PATTERN_KEY = re.compile(r"(?:^|\.)(?:encoder|transformer)\.layer\.(\d+)\.(.+)\.lora_E$")
_NEUTRAL: dict[str, Any] = {"use_dora": False, "bias": "none", "fan_in_fan_out": False, "use_rslora": False}


def import_peft(files: dict[str, bytes], directory: Path, base_dir: str | None) -> AdapterArtifact:
    meta = json_config(files, "adapter_config.json")
    for k, neutral in _NEUTRAL.items():
        if meta.get(k, neutral) != neutral:
            raise ConfigError(f"PEFT adapter_config.json: {k}={meta[k]!r} is not supported (only {neutral!r})")
    init_r = int(meta.get("init_r", 12))
    raw = read_tensors(directory / "adapter_model.safetensors")
    sites: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    families = set()
    for key, value in raw.items():
        m = _KEY.search(key)
        if m is not None:
            if m.group(1):
                families.add(m.group(1))
            sites.setdefault((int(m.group(2)), m.group(3)), {})[m.group(4)] = value
    if not sites:
        raise ArtifactError("PEFT adapter_model.safetensors: no AdaLoRA weights found")
    pattern: dict[str, int] = {}
    for key, kept in (meta.get("rank_pattern") or {}).items():
        m = _PATTERN_KEY.search(key.removesuffix(".default"))
        if m is None or not isinstance(kept, list) or len(kept) != init_r:
            raise ConfigError(f"rank_pattern: {key!r} must name a linear's lora_E with {init_r} booleans")
        pattern[site_name(int(m.group(1)), m.group(2))] = int(sum(bool(b) for b in kept))
    tensors: dict[str, torch.Tensor] = {}
    for (layer, linear), t in sites.items():
        if set(t) != {"A", "E", "B"}:
            raise ArtifactError(f"layer {layer} {linear}: an AdaLoRA linear needs lora_A, lora_E and lora_B")
        name = site_name(layer, linear)
        rank = t["A"].shape[0]
        if t["E"].shape != (rank, 1) or t["B"].shape[1] != rank:
            raise ArtifactError(f"{name}: lora_A, lora_E and lora_B disagree on the rank ({rank})")
        if pattern.get(name, init_r if not pattern else None) != rank:
            raise ConfigError(
                f"rank_pattern: {name} holds {rank} triplets, but the config's rank_pattern "
                f"{'says ' + str(pattern.get(name)) if pattern else 'is missing'} (init_r {init_r}); save the "
                "AdaLoRA with its rank_pattern, as PEFT's save_pretrained does"
            )
        if rank:
            tensors.update({f"adapter.sites.{name}.lora_{p}": t[p] for p in ("A", "E", "B")})
    ltt = meta.get("layers_to_transform")
    cfg = AdaLoraConfig(
        init_r=init_r,
        target_r=int(meta.get("target_r", 8)),
        alpha=float(meta.get("lora_alpha") or init_r),
        dropout=float(meta.get("lora_dropout") or 0.0),
        target_modules=tuple(sorted({linear for _, linear in sites})),
        layers=tuple([ltt] if isinstance(ltt, int) else ltt) if ltt is not None else None,
        **{k: meta[k] for k in ("tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight") if k in meta},
        rank_pattern={site_name(*k): sites[k]["A"].shape[0] for k in sites},
    )
    head = peft_seq_cls_head(raw, base_dir) if meta.get("task_type") == "SEQ_CLS" else None
    head_cfg = None
    if head is not None:
        head_cfg, head_weights = head
        tensors.update({f"head.{k}": v for k, v in head_weights.items()})
    attention = [t for (_, n), t in sites.items() if n.endswith(("query", "key", "value"))]
    hidden = int((attention or list(sites.values()))[0]["A"].shape[1])
    family = families.pop() if len(families) == 1 else None
    return AdapterArtifact(
        name=directory.name,
        config=cfg,
        hidden_size=hidden,
        tensors=tensors,
        head=head_cfg,
        model_type=family if family in ("bert", "distilbert", "electra") else None,
        kind="adalora",
    )


def export_peft(art: AdapterArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    cfg: AdaLoraConfig = art.config  # type: ignore[assignment]
    module, _ = split_tensors(art)
    pattern = {}

    def site(layer: int, linear: str) -> dict[str, torch.Tensor]:
        name = site_name(layer, linear)
        kept = (cfg.rank_pattern or {}).get(name, 0)
        pattern[f"{target.prefix}.encoder.layer.{layer}.{linear}.lora_E"] = [True] * kept + [False] * (
            cfg.init_r - kept
        )
        out = {}
        for p in ("A", "E", "B"):
            value = module.get(f"sites.{name}.lora_{p}")
            if value is None:  # a linear that kept nothing: PEFT saves it empty, [0, in], [0, 1], [out, 0]
                fan_in, fan_out = _dims(art, target, linear)
                value = torch.zeros({"A": (0, fan_in), "E": (0, 1), "B": (fan_out, 0)}[p])
            out[f"lora_{p}"] = value
        return out

    fields = {
        "peft_type": "ADALORA",
        "init_r": cfg.init_r,
        "target_r": cfg.target_r,
        "tinit": cfg.tinit,
        "tfinal": cfg.tfinal,
        "deltaT": cfg.deltaT,
        "beta1": cfg.beta1,
        "beta2": cfg.beta2,
        "orth_reg_weight": cfg.orth_reg_weight,
        "total_step": max(cfg.tinit + cfg.tfinal + 1, 1),
        "rank_pattern": pattern,  # filled as the sites are written
    }
    return peft_files(art, target, with_head, cfg, site, fields)


def _dims(art: AdapterArtifact, target: Target, linear: str) -> tuple[int, int]:
    """(in, out) of one linear of the target base: the FFN's two linears go through its inner width (the
    target's, else another site's of the same linear); every other linear is hidden -> hidden."""
    up, down = FAMILIES[target.family].linears[4:6]
    if linear not in (up, down):
        return art.hidden_size, art.hidden_size
    inner = target.intermediate_size
    for k, v in art.tensors.items():
        if not inner and k.endswith(f"_{linear.replace('.', '_')}.lora_B"):
            inner = int(v.shape[0]) if linear == up else int(art.tensors[k.replace("lora_B", "lora_A")].shape[1])
    if not inner:
        raise ConfigError(f"format: {linear} kept no rank anywhere, and the base's FFN width is unknown")
    return (art.hidden_size, inner) if linear == up else (inner, art.hidden_size)
