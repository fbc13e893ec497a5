"""Our adapter artifact: `adapter_config.json` + `adapter.safetensors`, saved atomically.

The config carries the method and its fields, the head, the labels, the base model's
identity, the format version and the sha256 of the weights file. Loading verifies the
checksum, the tensors and the base before anything is attached to a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from composer.base import BaseIdentity
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError, IncompatibleBaseError
from composer.heads import HeadConfig
from composer.safetensors_io import (
    load_json,
    sha256_bytes,
    tensors_from_bytes,
    tensors_to_bytes,
    write_dir_atomically,
    write_file,
)

FORMAT = "composer-adapter"
FORMAT_VERSION = 1
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"


class AdapterConfig(Protocol):
    """What the engine asks of a method's adapter config (a bottleneck adapter's, a LoRA's, …)."""

    method: ClassVar[str]  # recorded in the artifact; `composer.presets.CONFIGS` maps it back to the class
    default_kind: ClassVar[str]  # the registry kind of an artifact extracted with this config

    def to_dict(self) -> dict[str, Any]: ...

    def build(self, model: AdaptedEncoder) -> nn.Module: ...


def _config_from(method: str, data: dict[str, Any]) -> AdapterConfig:
    from composer.presets import config_from  # where the methods' config classes come together

    return config_from(method, data)


@dataclass
class AdapterArtifact:
    """An adapter (and optional head) in memory, independent of any model instance."""

    name: str
    config: AdapterConfig  # a bottleneck adapter's or a LoRA's
    hidden_size: int
    tensors: dict[str, torch.Tensor]  # "adapter.<site>.<param>" and "head.<param>"
    head: HeadConfig | None = None
    labels: list[str] | None = None
    base: BaseIdentity | None = None  # None only for foreign imports, bound when attached
    model_type: str | None = None
    kind: str = "st_a"
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = FORMAT
    max_length: int | None = None  # the tokenised length it was trained with; serving truncates there

    def config_json(self, sha256: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "kind": self.kind,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "head": self.head.to_dict() if self.head else None,
            "labels": self.labels,
            "base": self.base.to_dict() if self.base else None,
            "hidden_size": self.hidden_size,
            "model_type": self.model_type,
            "metrics": self.metrics,
            "max_length": self.max_length,
            "sha256": sha256,
        }


def extract(
    model: AdaptedEncoder,
    adapter: str,
    head: str | None = None,
    saved: tuple[Any, dict[str, torch.Tensor]] | None = None,
    **meta: Any,
) -> AdapterArtifact:
    """Take an adapter (and head) out of a model as an artifact bound to the model's base. `saved`: the config
    and state dict it is saved as, where the method saves less than it trained (an AdaLoRA's kept ranks)."""
    cfg, state = saved if saved is not None else (model.adapters[adapter].cfg, model.adapters[adapter].state_dict())
    tensors = {f"adapter.{k}": v.detach().cpu().clone() for k, v in state.items()}
    head_cfg = None
    if head is not None:
        tensors.update({f"head.{k}": v.detach().cpu().clone() for k, v in model.heads[head].state_dict().items()})
        head_cfg = model.heads[head].cfg
    meta.setdefault("kind", cfg.default_kind)
    return AdapterArtifact(
        name=adapter,
        config=cfg,
        hidden_size=model.base.hidden_size,
        tensors=tensors,
        head=head_cfg,
        base=model.base.identity,
        model_type=model.base.family,
        **meta,
    )


def to_files(art: AdapterArtifact) -> tuple[bytes, bytes]:
    """Serialise to (config JSON bytes, safetensors bytes)."""
    if art.base is None:
        raise ArtifactError("an artifact must be bound to a base identity before it is saved")
    weights = tensors_to_bytes(art.tensors)
    config = json.dumps(art.config_json(sha256_bytes(weights)), indent=2, sort_keys=True).encode()
    return config, weights


def save(art: AdapterArtifact, directory: str | Path) -> Path:
    config, weights = to_files(art)

    def write(tmp: Path) -> None:
        write_file(tmp / WEIGHTS_NAME, weights)
        write_file(tmp / CONFIG_NAME, config)

    write_dir_atomically(Path(directory), write)
    return Path(directory)


def from_files(config_bytes: bytes, weights: bytes) -> AdapterArtifact:
    meta = load_json(config_bytes, CONFIG_NAME)
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"not a {FORMAT} config (format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"unsupported format_version {meta.get('format_version')!r}; this build reads {FORMAT_VERSION}"
        )
    if sha256_bytes(weights) != meta.get("sha256"):
        raise ArtifactError("checksum mismatch: adapter.safetensors does not match the sha256 in its config")
    config = _config_from(str(meta.get("method")), meta["config"])
    tensors = tensors_from_bytes(weights, WEIGHTS_NAME)
    check = getattr(config, "check_tensors", None)  # a method whose tensors carry more than shapes (indices)
    if check is not None:
        check({k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")})
    return AdapterArtifact(
        name=str(meta["name"]),
        config=config,
        hidden_size=int(meta["hidden_size"]),
        tensors=tensors,
        head=HeadConfig.from_dict(meta["head"]) if meta.get("head") else None,
        labels=meta.get("labels"),
        base=BaseIdentity.from_dict(meta["base"]) if meta.get("base") else None,
        model_type=meta.get("model_type"),
        kind=meta.get("kind", "st_a"),
        metrics=meta.get("metrics") or {},
        max_length=meta.get("max_length"),
    )


def load(directory: str | Path) -> AdapterArtifact:
    """Load our format from a directory (`composer.kinds.load_dir` also detects and imports foreign ones)."""
    d = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (d / name).is_file():
            raise ArtifactError(f"{d} has no {name}")
    return from_files((d / CONFIG_NAME).read_bytes(), (d / WEIGHTS_NAME).read_bytes())


def build(model: AdaptedEncoder, art: AdapterArtifact, share: bool = False) -> tuple[nn.Module, nn.Module | None]:
    """The artifact's adapter and head for `model`, weights loaded strictly, not attached. With `share` the
    modules use the artifact's tensors themselves (serving, which never trains them, keeps one copy in host
    memory); otherwise they own copies, so training one never writes into an artifact a cache may hand out."""
    if art.hidden_size != model.base.hidden_size:
        raise IncompatibleBaseError(
            f"adapter {art.name!r} has hidden size {art.hidden_size}, the base has {model.base.hidden_size}"
        )
    if art.model_type and art.model_type != model.base.family:
        raise IncompatibleBaseError(
            f"adapter {art.name!r} is for {art.model_type!r}, the base is {model.base.family!r}"
        )
    if art.base is not None:
        model.base.identity.check_same(art.base, what=f"adapter {art.name!r}")
    else:
        art.base = model.base.identity
    own = (lambda t: t) if share else (lambda t: t.clone())
    adapter_sd = {k[len("adapter.") :]: own(v) for k, v in art.tensors.items() if k.startswith("adapter.")}
    head_sd = {k[len("head.") :]: own(v) for k, v in art.tensors.items() if k.startswith("head.")}
    try:
        if art.head is None and head_sd:
            raise ArtifactError("weights contain a head but the config declares none")
        adapter = model.build_adapter(art.config, weights=adapter_sd)
        head = model.build_head(art.head, weights=head_sd) if art.head is not None else None
    except (RuntimeError, ArtifactError) as e:
        raise ArtifactError(f"adapter {art.name!r}: weights do not fit its config: {e}") from None
    return adapter, head


def attach(model: AdaptedEncoder, art: AdapterArtifact, name: str | None = None, share: bool = False) -> str:
    """Build the artifact's modules (`build`) and attach them to `model` under `name`."""
    name = name or art.name
    model.put(name, *build(model, art, share))
    return name


def split_tensors(art: AdapterArtifact) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The artifact's module tensors and head tensors, without their prefixes."""
    module = {k[len("adapter.") :]: v for k, v in art.tensors.items() if k.startswith("adapter.")}
    head = {k[len("head.") :]: v for k, v in art.tensors.items() if k.startswith("head.")}
    return module, head
