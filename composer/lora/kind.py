"""The face of the LoRA method's kind. A LoRA serves in the same mixed forwards as bottleneck adapters (its
rows' updates are gathered per linear); it is not fusable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace
from composer.exporting import Target
from composer.lora import export
from composer.lora.merge import LORA_METHODS, merge_loras
from composer.method import as_directory, json_config


class LoraKind(AdapterFace):
    """A LoRA and its head. It serves in the same mixed forwards as bottleneck adapters; it is not fusable."""

    fusable = False
    formats = ("native", "adapterhub", "peft")

    def export(
        self, art: AdapterArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "adapterhub":
            return export.lora_to_hub(art, target, with_head=with_head)
        if fmt == "peft":
            return export.lora_to_peft(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def __init__(self) -> None:
        super().__init__("lora")

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, artifacts.CONFIG_NAME)
        if meta.get("peft_type") == "LORA":
            return "peft"
        raw = meta.get("config") or {}
        if (
            raw.get("architecture") == "lora"
            and raw.get("composition_mode", "add") != "scale"
            and "peft_type" not in meta
        ):
            return "adapterhub"
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        from composer.lora.imports import import_adapterhub_lora, import_peft_lora

        with as_directory(files) as d:
            if self.detect(files) == "peft":
                return import_peft_lora(files, d, base_dir)
            return import_adapterhub_lora(files, d)

    merge_methods = LORA_METHODS

    def merge(self, members, weights, method, density, seed, family):  # type: ignore[no-untyped-def]
        return self.merged(members, *merge_loras(members, weights, method, family, density, seed))

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "lora", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


LORA = LoraKind()
