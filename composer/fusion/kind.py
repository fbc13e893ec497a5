"""The face of the fusion kind: an AdapterFusion over registered bottleneck adapters, with the target task's head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from composer.composition import Fuse
from composer.exporting import Target
from composer.fusion import artifacts as fusion_artifacts
from composer.fusion import export
from composer.fusion.artifacts import FusionArtifact
from composer.method import MethodKind, Models, Prediction, as_directory, json_config, module_bytes
from composer.rows import rows_through_heads


class FusionKind(MethodKind):
    """An AdapterFusion over registered adapters, with the target task's head."""

    name = "fusion"
    in_trees = "fuse"
    file_names = ("fusion_config.json", "fusion.safetensors")
    importable = False  # alone: it imports with its members (composer.kinds.plan_archive)
    formats = ("native", "adapterhub")

    def export(
        self, art: FusionArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "adapterhub":
            return export.fusion_to_hub(art, list(members), target, with_head=with_head)
        return super().export(art, fmt, target)

    def from_files(self, config: bytes, weights: bytes) -> FusionArtifact:
        return fusion_artifacts.from_files(config, weights)

    def to_files(self, art: FusionArtifact) -> tuple[bytes, bytes]:
        return fusion_artifacts.to_files(art)

    def detect(self, files: dict[str, bytes]) -> str | None:
        if json_config(files, self.file_names[0]).get("format") == fusion_artifacts.FORMAT:
            return "ours"
        return "adapterhub" if "adapter_fusion_config.json" in files else None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> FusionArtifact:
        """An AdapterHub fusion folder (save_adapter_fusion); its members come from their own folders."""
        with as_directory(files) as d:
            return fusion_artifacts.import_adapterhub_fusion(d)

    def param_count(self, art: FusionArtifact) -> int:
        return int(sum(t.numel() for t in art.tensors.values()))

    def method_config(self, art: FusionArtifact, **extra: Any) -> dict[str, Any]:
        # the members are the registry's fusion_members rows (and the artifact's own list), not a third copy
        return {"method": "fusion", "config": art.config.to_dict(), "max_length": art.max_length, **extra}

    def attach(self, models: Models, art: FusionArtifact, name: str, members: Sequence[str] = ()) -> None:
        fusion_artifacts.attach(models.encoder, art, member_names=list(members) or None, name=name)
        models.encoder.fusion_plan(name).warm()  # stacked members and precomposed matrices, built at load

    def remove(self, models: Models, name: str) -> None:
        models.encoder.remove(name)

    def nbytes(self, models: Models, name: str) -> int:
        enc = models.encoder
        head = enc.heads[name] if name in enc.heads else None
        return module_bytes(enc.fusions[name], head) + enc.fusion_plan(name).nbytes()

    def predict(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], return_attention: bool = False
    ) -> Prediction:
        name = names[0]
        out = models.encoder(**batch, composition=Fuse(name), return_fusion_attention=return_attention)
        return Prediction(
            rows_through_heads(names, out.hidden, batch["attention_mask"], models.encoder.heads), out.fusion_attention
        )


FUSION = FusionKind()
