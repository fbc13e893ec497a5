"""Soft-prompt artifacts (ours), and importers for AdapterHub and PEFT prompt-tuning directories.

Ours: `prompt_config.json` + `prompt.safetensors` (`prompt.embedding` [L, H] and the
prompt's own `head.*`, the way PEFT keeps the classifier in `modules_to_save`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from composer.base import BaseIdentity
from composer.errors import ArtifactError, ConfigError
from composer.heads import HeadConfig, peft_seq_cls_head
from composer.prompts.prompt import PromptConfig
from composer.safetensors_io import read_tensors, sha256_bytes, tensors_from_bytes, tensors_to_bytes

FORMAT = "composer-prompt"
METHODS = {"soft_prompt": "prompt_tuning", "p_tuning": "p_tuning", "prefix": "prefix_tuning"}


@dataclass
class PromptArtifact:
    name: str
    config: PromptConfig
    hidden_size: int
    prompt: torch.Tensor  # [L, H]
    head: HeadConfig | None = None
    head_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: list[str] | None = None
    base: BaseIdentity | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    max_length: int | None = None  # the tokenised length it was trained with; serving truncates there

    @property
    def kind(self) -> str:
        return self.config.registry_kind


def to_files(art: PromptArtifact) -> tuple[bytes, bytes]:
    tensors = {"prompt.embedding": art.prompt, **{f"head.{k}": v for k, v in art.head_tensors.items()}}
    weights = tensors_to_bytes(tensors)
    meta = {
        "format": FORMAT,
        "format_version": 1,
        "name": art.name,
        "kind": art.kind,
        "method": METHODS[art.kind],
        "config": art.config.to_dict(),
        "head": art.head.to_dict() if art.head else None,
        "labels": art.labels,
        "hidden_size": art.hidden_size,
        "base": art.base.to_dict() if art.base else None,
        "metrics": art.metrics,
        "max_length": art.max_length,
        "sha256": sha256_bytes(weights),
    }
    return json.dumps(meta, indent=2, sort_keys=True).encode(), weights


def from_files(config: bytes, weights: bytes) -> PromptArtifact:
    meta = json.loads(config)
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"not a {FORMAT} config")
    if sha256_bytes(weights) != meta.get("sha256"):
        raise ArtifactError("checksum mismatch: prompt weights do not match the sha256 in their config")
    tensors = tensors_from_bytes(weights, "prompt weights")
    if "prompt.embedding" not in tensors:
        raise ArtifactError("prompt weights have no prompt.embedding")
    return PromptArtifact(
        name=meta["name"],
        config=PromptConfig.from_dict(meta["config"]),
        hidden_size=int(meta["hidden_size"]),
        prompt=tensors["prompt.embedding"],
        head=HeadConfig.from_dict(meta["head"]) if meta.get("head") else None,
        head_tensors={k[5:]: v for k, v in tensors.items() if k.startswith("head.")},
        labels=meta.get("labels"),
        base=BaseIdentity.from_dict(meta["base"]) if meta.get("base") else None,
        metrics=meta.get("metrics") or {},
        max_length=meta.get("max_length"),
    )


def import_adapterhub_prompt(directory: str | Path) -> PromptArtifact:
    d = Path(directory)
    meta = json.loads((d / "adapter_config.json").read_text())
    raw = meta.get("config", {})
    if raw.get("architecture") != "prompt_tuning":
        raise ConfigError("not an AdapterHub prompt-tuning adapter")
    if raw.get("combine", "prefix") != "prefix":
        raise ConfigError(f"combine={raw.get('combine')!r} is not supported")
    (weight,) = [v for k, v in read_tensors(d / "adapter.safetensors").items() if k.endswith("prompt_embedding.weight")]
    cfg = PromptConfig(length=int(raw["prompt_length"]), insertion="embedding_output", init="uniform")
    return PromptArtifact(
        name=str(meta.get("name", d.name)), config=cfg, hidden_size=int(meta["hidden_size"]), prompt=weight
    )


def import_peft_prompt(directory: str | Path, base_dir: str | Path | None = None) -> PromptArtifact:
    """A PEFT PROMPT_TUNING directory. For SEQ_CLS the classifier comes from `modules_to_save`, and the
    pooler it reads (dense + tanh on position 0) from the base checkpoint, which PEFT does not copy."""
    d = Path(directory)
    if (d / "adapter_model.bin").exists() and not (d / "adapter_model.safetensors").exists():
        raise ArtifactError("adapter_model.bin is a pickle and is refused; save the PEFT model with safetensors")
    meta = json.loads((d / "adapter_config.json").read_text())
    if meta.get("peft_type") != "PROMPT_TUNING":
        raise ConfigError(f"only PEFT PROMPT_TUNING imports here, got {meta.get('peft_type')!r}")
    tensors = read_tensors(d / "adapter_model.safetensors")
    prompt = tensors["prompt_embeddings"]
    cfg = PromptConfig(length=int(meta["num_virtual_tokens"]), insertion="input_embeds", init="uniform")
    art = PromptArtifact(name=d.name, config=cfg, hidden_size=int(meta["token_dim"]), prompt=prompt)
    return with_peft_head(art, meta, tensors, str(base_dir) if base_dir is not None else None)


def with_peft_head(
    art: PromptArtifact, meta: dict[str, Any], tensors: dict[str, torch.Tensor], base_dir: str | None
) -> PromptArtifact:
    """A PEFT SEQ_CLS prompt's head: the classifier from `modules_to_save`, the pooler from the base."""
    head = peft_seq_cls_head(tensors, base_dir)
    if head is not None and meta.get("task_type") == "SEQ_CLS":
        art.head, art.head_tensors = head
    return art
