"""The face of the AdaLoRA kind: saved pruned to its kept triplets, it serves as a LoRA of variable rank in the
same mixed forwards as the other adapters; PEFT's ADALORA imports and exports. Not fusable; not a transfer
source (its ranks differ per linear, so a new adapter cannot start from its weights)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composer.adalora import interop
from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace
from composer.exporting import Target
from composer.method import as_directory, json_config


class AdaLoraKind(AdapterFace):
    formats = ("native", "peft")
    rankable = False

    def __init__(self) -> None:
        super().__init__("adalora")

    def detect(self, files: dict[str, bytes]) -> str | None:
        return "peft" if json_config(files, "adapter_config.json").get("peft_type") == "ADALORA" else None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        with as_directory(files) as d:
            return interop.import_peft(files, d, base_dir)

    def export(
        self, art: AdapterArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "peft":
            return interop.export_peft(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "adalora", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


ADALORA = AdaLoraKind()
