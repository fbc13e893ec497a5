"""The face of a saved composition: a tree of registered modules kept as a registry module of its own.

It holds no weights: its artifact is the tree (JSON, every reference an id), its heads and its members.
It never attaches to a model; it serves by running its tree (`composer.composed`) over its members, which
serving leases as it leases any tree. `composed = True` tells callers so, instead of a branch on the kind.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from composer.errors import ArtifactError, ConfigError
from composer.exporting import Target
from composer.method import MethodKind, Models, Prediction

FORMAT = "adapter-composer/composition@1"


@dataclass
class CompositionArtifact:
    name: str
    tree: dict[str, Any]  # the JSON grammar, references resolved to ids
    heads: list[str]  # the head of each branch (one unless a Parallel)
    members: list[str]  # the adapters and fusions it runs
    hidden_size: int
    fused: dict[str, list[str]] = field(default_factory=dict)  # each fusion's members, in order
    metrics: dict[str, Any] = field(default_factory=dict)
    base: Any = None
    labels: list[str] | None = None
    max_length: int | None = None
    head: Any = None

    @property
    def kind(self) -> str:
        return "composition"

    def export_order(self) -> list[str]:
        """Every module an export needs, in the order `export` takes their artifacts: the members, then the
        fusions' members."""
        return list(dict.fromkeys([*self.members, *(m for ms in self.fused.values() for m in ms)]))


class CompositionKind(MethodKind):
    name = "composition"
    file_names = ("composition.json", "composition.safetensors")
    importable = False
    composed = True
    formats = ("native", "adapterhub")

    def export(
        self, art: CompositionArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        """AdapterHub: a folder per member (each named by its id), a folder per fusion (its members and its
        `fusion/`), and `composition.json`, the setup in adapters 1.3.0's blocks with the head to activate.
        Members come in `art.export_order()`."""
        if fmt != "adapterhub":
            return super().export(art, fmt, target)
        if "parallel" in art.tree:
            raise ConfigError(
                "format: a parallel does not export to AdapterHub: adapters 1.3.0's Parallel runs its first "
                "member's pre-processing for every branch, so it answers differently; export its branches"
            )
        from composer import kinds  # the members' faces (composer.kinds registers this one)

        arts = dict(zip(art.export_order(), members, strict=True))
        files: dict[str, bytes] = {}
        for mid in art.members:
            if mid in art.fused:
                named = [dataclasses.replace(arts[m], name=m) for m in art.fused[mid]]
                out = kinds.get(arts[mid].kind).export(
                    arts[mid], "adapterhub", target, named, with_head and mid in art.heads
                )
            else:
                one = dataclasses.replace(arts[mid], name=mid)
                out = kinds.get(one.kind).export(one, "adapterhub", target, (), with_head and mid in art.heads)
            files.update({f"{mid}/{path}": blob for path, blob in out.items()})
        head = art.heads[0]
        setup = {
            "format": "adapterhub-composition",
            "setup": _hub_tree(art.tree),
            "adapters": [m for m in art.members if m not in art.fused],
            "fusions": art.fused,
            "active_head": (",".join(art.fused[head]) if head in art.fused else head) if with_head else None,
            "note": "each adapter folder loads with load_adapter(folder, load_as=its id); each fusion folder holds "
            "its members and fusion/ (load_adapter_fusion); an average's weights are written for adapters "
            "1.3.0's mean of weighted outputs (normalize_weights=False, each weight times the member count)",
        }
        files["composition.json"] = json.dumps(setup, indent=2).encode()
        return files

    def from_files(self, config: bytes, weights: bytes) -> CompositionArtifact:
        try:
            d = json.loads(config)
        except ValueError as e:
            raise ArtifactError(f"composition.json is not JSON: {e}") from None
        if d.get("format") != FORMAT:
            raise ArtifactError(f"composition.json is not {FORMAT}")
        fused = {k: list(v) for k, v in (d.get("fused") or {}).items()}
        return CompositionArtifact(
            d["name"], d["tree"], list(d["heads"]), list(d["members"]), int(d["hidden_size"]), fused=fused
        )

    def to_files(self, art: CompositionArtifact) -> tuple[bytes, bytes]:
        d = {
            "format": FORMAT,
            "name": art.name,
            "tree": art.tree,
            "heads": art.heads,
            "members": art.members,
            "hidden_size": art.hidden_size,
            "fused": art.fused,
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


def _hub_tree(node: Any) -> Any:
    """Our tree as adapters 1.3.0 builds it: a fusion by its members; an Average's weights scaled so that
    its mean of weighted outputs is our weighted sum."""
    if isinstance(node, str):
        return node
    if "fuse" in node:
        return {"fuse": node["fuse"]}
    if "stack" in node:
        return {"stack": [_hub_tree(c) for c in node["stack"]]}
    children = node["average"]
    weights = node.get("weights") or [1.0] * len(children)
    total = sum(weights)
    return {
        "average": [_hub_tree(c) for c in children],
        "weights": [w / total * len(children) for w in weights],
        "normalize_weights": False,
    }


COMPOSITION = CompositionKind()
