"""The face of a saved composition: a tree of registered modules kept as a registry module of its own.

It holds no weights: its artifact is the tree (JSON, every reference an id), its heads and its members.
It never attaches to a model; it serves by running its tree (`composer.composed`) over its members, which
serving leases as it leases any tree. `composed = True` tells callers so, instead of a branch on the kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from composer.errors import ArtifactError, ConfigError
from composer.method import MethodKind, Models, Prediction

FORMAT = "adapter-composer/composition@1"


@dataclass
class CompositionArtifact:
    name: str
    tree: dict[str, Any]  # the JSON grammar, references resolved to ids
    heads: list[str]  # the head of each branch (one unless a Parallel)
    members: list[str]  # the adapters and fusions it runs
    hidden_size: int
    metrics: dict[str, Any] = field(default_factory=dict)
    base: Any = None
    labels: list[str] | None = None
    max_length: int | None = None
    head: Any = None

    @property
    def kind(self) -> str:
        return "composition"


class CompositionKind(MethodKind):
    name = "composition"
    file_names = ("composition.json", "composition.safetensors")
    importable = False
    composed = True

    def from_files(self, config: bytes, weights: bytes) -> CompositionArtifact:
        try:
            d = json.loads(config)
        except ValueError as e:
            raise ArtifactError(f"composition.json is not JSON: {e}") from None
        if d.get("format") != FORMAT:
            raise ArtifactError(f"composition.json is not {FORMAT}")
        return CompositionArtifact(d["name"], d["tree"], list(d["heads"]), list(d["members"]), int(d["hidden_size"]))

    def to_files(self, art: CompositionArtifact) -> tuple[bytes, bytes]:
        d = {
            "format": FORMAT,
            "name": art.name,
            "tree": art.tree,
            "heads": art.heads,
            "members": art.members,
            "hidden_size": art.hidden_size,
        }
        return json.dumps(d, indent=2, sort_keys=True).encode(), b""

    def param_count(self, art: CompositionArtifact) -> int:
        return 0  # its members' parameters are theirs

    def method_config(self, art: CompositionArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "composition", "composition": art.tree, "heads": art.heads, "members": art.members, **extra}

    def attach(self, models: Models, art: Any, name: str, members: Sequence[str] = ()) -> None:
        raise ConfigError("a saved composition is not attached: it serves through its tree")

    def remove(self, models: Models, name: str) -> None:
        return None

    def nbytes(self, models: Models, name: str) -> int:
        return 0

    def predict(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], return_attention: bool = False
    ) -> Prediction:
        raise ConfigError("a saved composition serves through its tree")


COMPOSITION = CompositionKind()
