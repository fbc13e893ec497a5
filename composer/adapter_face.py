"""The face shared by the kinds whose artifact is an `AdapterArtifact` on the `AdaptedEncoder` (a bottleneck
adapter, an MT-A member, a LoRA, …): files, attach and detach, and serving rows of any of them (and of prompts) in
one mixed forward (`composer.rows`), each row through its own head. Each method's package subclasses it with what is its own
(detection, import, export, method config)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact
from composer.method import MethodKind, Models, module_bytes
from composer.rows import InRows


class AdapterFace(InRows, MethodKind):
    """An adapter and its head on the resident encoder."""

    in_trees = "member"
    rankable = True

    def merged(
        self, members: Sequence[AdapterArtifact], config: Any, tensors: dict[str, torch.Tensor]
    ) -> AdapterArtifact:
        """The merged module as an artifact of this kind (bound to the members' base; no head yet)."""
        first = members[0]
        return AdapterArtifact(
            name=f"merge of {len(members)}",
            config=config,
            hidden_size=first.hidden_size,
            tensors=tensors,
            base=first.base,
            model_type=first.model_type,
            kind=self.name,
            max_length=min((m.max_length for m in members if m.max_length), default=None),
        )

    file_names = (artifacts.CONFIG_NAME, artifacts.WEIGHTS_NAME)
    prefetchable = True

    def __init__(self, name: str):
        self.name = name

    def from_files(self, config: bytes, weights: bytes) -> AdapterArtifact:
        return artifacts.from_files(config, weights)

    def to_files(self, art: AdapterArtifact) -> tuple[bytes, bytes]:
        return artifacts.to_files(art)

    def param_count(self, art: AdapterArtifact) -> int:
        return int(sum(t.numel() for k, t in art.tensors.items() if k.startswith("adapter.")))

    def attach(self, models: Models, art: AdapterArtifact, name: str, members: Sequence[str] = ()) -> None:
        self.reattach(models, name, self.build(models, art, name))

    def build(self, models: Models, art: AdapterArtifact, name: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        return artifacts.build(models.encoder, art, share=True)  # serving: inference only, one copy

    def remove(self, models: Models, name: str) -> None:
        models.encoder.remove(name)

    def detach(self, models: Models, name: str) -> tuple[torch.nn.Module, torch.nn.Module | None] | None:
        """The adapter and its head, off the base. On CPU they stay built beside their artifact (whose tensors
        they share); on a GPU they are dropped, and a reload copies the artifact over again."""
        enc = models.encoder
        held = (enc.adapters[name], enc.heads[name] if name in enc.heads else None)
        enc.remove(name)
        return held if enc.device.type == "cpu" else None

    def reattach(self, models: Models, name: str, held: tuple[torch.nn.Module, torch.nn.Module | None]) -> None:
        models.encoder.put(name, *held)

    def nbytes(self, models: Models, name: str) -> int:
        enc = models.encoder
        return module_bytes(enc.adapters[name], enc.heads[name] if name in enc.heads else None)
