"""Fusion artifacts (our format) and the AdapterHub fusion importer.

Ours: `fusion_config.json` + `fusion.safetensors`. The config names the member adapters
by id (registry id, or the name they had in the model) in order, never by a comma-joined
string, plus the fusion config, the target task's head and labels, the `max_length` it was
trained with, the base identity and the weights' sha256. The weights hold `fusion.*` and
the head's `head.*`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from composer.base import BaseIdentity
from composer.bottleneck.modules import site_key
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError, ConfigError
from composer.exporting import read_hub_head
from composer.fusion.modules import FusionConfig
from composer.heads import HeadConfig
from composer.safetensors_io import load_json, read_tensors, sha256_bytes, tensors_from_bytes, tensors_to_bytes

FORMAT = "composer-fusion"
_HUB_KEY = re.compile(
    r"(?:^|\.)layer\.(\d+)\.(attention\.output|output)\.adapter_fusion_layer\.[^.]+\.(query|key|value)\.(weight|bias)$"
)


@dataclass
class FusionArtifact:
    name: str
    members: list[str]
    config: FusionConfig
    hidden_size: int
    tensors: dict[str, torch.Tensor]
    base: BaseIdentity | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    head: HeadConfig | None = None
    head_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: list[str] | None = None
    max_length: int | None = None  # the tokenised length it was trained with; serving truncates there

    @property
    def kind(self) -> str:
        return "fusion"


def extract(
    model: AdaptedEncoder, fusion: str, members: list[str] | None = None, head: str | None = None, **meta: Any
) -> FusionArtifact:
    module = model.fusions[fusion]
    head_module = model.heads[head] if head is not None else None
    return FusionArtifact(
        name=fusion,
        members=list(members or module.members),
        config=module.cfg,
        hidden_size=model.base.hidden_size,
        tensors={k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        base=model.base.identity,
        head=head_module.cfg if head_module is not None else None,
        head_tensors={k: v.detach().cpu().clone() for k, v in head_module.state_dict().items()} if head_module else {},
        **meta,
    )


def to_files(art: FusionArtifact) -> tuple[bytes, bytes]:
    tensors = {f"fusion.{k}": v for k, v in art.tensors.items()}
    tensors.update({f"head.{k}": v for k, v in art.head_tensors.items()})
    weights = tensors_to_bytes(tensors)
    meta = {
        "format": FORMAT,
        "format_version": 1,
        "name": art.name,
        "members": art.members,
        "config": art.config.to_dict(),
        "hidden_size": art.hidden_size,
        "base": art.base.to_dict() if art.base else None,
        "metrics": art.metrics,
        "head": art.head.to_dict() if art.head else None,
        "labels": art.labels,
        "max_length": art.max_length,
        "sha256": sha256_bytes(weights),
    }
    return json.dumps(meta, indent=2, sort_keys=True).encode(), weights


def from_files(config: bytes, weights: bytes) -> FusionArtifact:
    meta = load_json(config, "fusion_config.json")
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"not a {FORMAT} config")
    if sha256_bytes(weights) != meta.get("sha256"):
        raise ArtifactError("checksum mismatch: fusion weights do not match the sha256 in their config")
    tensors = tensors_from_bytes(weights, "fusion weights")
    art = FusionArtifact(
        name=meta["name"],
        members=list(meta["members"]),
        config=FusionConfig.from_dict(meta["config"]),
        hidden_size=int(meta["hidden_size"]),
        tensors={k[len("fusion.") :]: v for k, v in tensors.items() if k.startswith("fusion.")},
        base=BaseIdentity.from_dict(meta["base"]) if meta.get("base") else None,
        metrics=meta.get("metrics") or {},
        head=HeadConfig.from_dict(meta["head"]) if meta.get("head") else None,
        head_tensors={k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")},
        labels=meta.get("labels"),
        max_length=meta.get("max_length"),
    )
    return art


def attach(
    model: AdaptedEncoder, art: FusionArtifact, member_names: list[str] | None = None, name: str | None = None
) -> str:
    """Add the fusion over already-attached member adapters and load its weights strictly."""
    name = name or art.name
    if art.hidden_size != model.base.hidden_size:
        raise ConfigError(f"fusion hidden size {art.hidden_size} != base {model.base.hidden_size}")
    if art.base is not None:
        model.base.identity.check_same(art.base, what=f"fusion {art.name!r}")
    module = model.add_fusion(name, member_names or art.members, art.config)
    # fusions saved before member priors existed (and AdapterHub's) have none: a zero prior is that fusion
    tensors = {k: torch.zeros_like(v) for k, v in module.state_dict().items() if k.endswith(".prior")}
    tensors.update(art.tensors)
    try:
        module.load_state_dict(tensors, strict=True)
        if art.head is not None:
            model.add_head(name, art.head).load_state_dict(art.head_tensors, strict=True)
    except RuntimeError as e:
        model.remove(name)
        raise ArtifactError(f"fusion {art.name!r}: weights do not fit: {e}") from None
    return name


def import_adapterhub_fusion(directory: str | Path) -> FusionArtifact:
    d = Path(directory)
    if (d / "pytorch_model_adapter_fusion.bin").exists() and not (d / "model_adapter_fusion.safetensors").exists():
        raise ArtifactError("pytorch_model_adapter_fusion.bin is a pickle and is refused; convert it to safetensors")
    meta = json.loads((d / "adapter_fusion_config.json").read_text())
    raw = meta["config"]
    if not (raw.get("query") and raw.get("key")):
        raise ConfigError("fusions without query/key projections are not supported")
    if raw.get("residual_before") or raw.get("query_before_ln"):
        raise ConfigError("residual_before / query_before_ln fusions are not supported")
    # V is linear without bias, so applying it before or after the softmax mix is the same.
    # An annealed temperature ends at 1.0 in the reference; we keep that fixed value.
    cfg = FusionConfig(value=bool(raw.get("value")), temperature=1.0, dropout=float(raw.get("dropout_prob") or 0.1))
    tensors = {}
    for key, value in read_tensors(d / "model_adapter_fusion.safetensors").items():
        m = _HUB_KEY.search(key)
        if m is None:
            raise ArtifactError(f"unexpected AdapterHub fusion weight {key!r}")
        placement = "attention" if m.group(2) == "attention.output" else "ffn"
        tensors[f"sites.{site_key(int(m.group(1)), placement)}.{m.group(3)}.{m.group(4)}"] = value
    head, labels, head_tensors = read_hub_head(d)  # saved with_head=True: the fusion's own classification head
    return FusionArtifact(
        name=str(meta.get("name", d.name)).replace(",", "+"),
        members=list(meta["adapter_names"]),
        config=cfg,
        hidden_size=int(meta["hidden_size"]),
        tensors=tensors,
        head=head,
        head_tensors={k[len("head.") :]: v for k, v in head_tensors.items()},
        labels=labels,
    )


def resolve_head(art: FusionArtifact, members: list[tuple[str, Any]]) -> str:
    """Where an imported fusion's head comes from, as AdapterHub serves it. A head saved with the fusion
    (`save_adapter_fusion(..., with_head=True)`) is the fusion's. Without one, AdapterHub serves a fusion
    through the active head, which users name after the target adapter and save with that member
    (`save_adapter(..., with_head=True)`): when exactly one member has a head, it is the fusion's head too
    (the member keeps it). No head, or several a fusion without its own could mean, is refused, saying
    which heads were found where. Returns where the head came from (`fusion/` or the member's folder)."""
    with_heads = [(folder, m) for folder, m in members if getattr(m, "head", None) is not None]
    found = ", ".join(f"{folder}/ ({m.head.kind}, {m.head.num_labels} outputs)" for folder, m in with_heads)
    if art.head is not None:
        return "fusion/"
    if not with_heads:
        raise ArtifactError(
            "the fusion has no head: neither the fusion folder nor any member folder holds head_config.json and "
            "model_head.safetensors; save the head with the fusion (save_adapter_fusion(..., with_head=True)) "
            "or with its target member (save_adapter(..., with_head=True))"
        )
    if len(with_heads) > 1:
        raise ArtifactError(
            f"the fusion folder has no head and several members have one: {found}; which one the fusion "
            "serves through is not clear. Save the head with the fusion (save_adapter_fusion(..., "
            "with_head=True)), or keep a head with the target member only"
        )
    folder, member = with_heads[0]
    art.head = member.head
    art.head_tensors = {k[len("head.") :]: v for k, v in member.tensors.items() if k.startswith("head.")}
    art.labels = art.labels or member.labels
    return f"{folder}/"
