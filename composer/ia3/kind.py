"""The face of the (IA)³ kind: it serves in the same mixed forwards as the other adapters (its rows' vectors are
gathered per linear); it is not fusable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace
from composer.exporting import Target
from composer.ia3 import interop
from composer.method import as_directory, json_config


class IA3Kind(AdapterFace):
    formats = ("native", "adapterhub", "peft")

    def __init__(self) -> None:
        super().__init__("ia3")

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, "adapter_config.json")
        if meta.get("peft_type") == "IA3":
            return "peft"
        raw = meta.get("config") or {}
        if raw.get("architecture") == "lora" and raw.get("composition_mode") == "scale" and "peft_type" not in meta:
            return "adapterhub"
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        with as_directory(files) as d:
            if self.detect(files) == "peft":
                return interop.import_peft(files, d, base_dir)
            return interop.import_adapterhub(files, d)

    def export(
        self, art: AdapterArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "adapterhub":
            return interop.to_hub(art, target, with_head=with_head)
        if fmt == "peft":
            return interop.to_peft(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "ia3", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


IA3 = IA3Kind()
