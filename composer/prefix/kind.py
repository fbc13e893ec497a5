"""The face of the prefix kind (prefix tuning; deep prompts). It serves through the prompt model like any prompt,
and imports and exports PEFT's PREFIX_TUNING and AdapterHub's prefix_tuning."""

from __future__ import annotations

from pathlib import Path

from composer.exporting import Target
from composer.method import json_config
from composer.prefix import interop
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.kind import PromptFace


class PrefixKind(PromptFace):
    # an AdapterHub prefix comes only as these pickles (adapters 1.3 cannot save it as safetensors)
    weights_only_pickles = ("pytorch_adapter.bin", "pytorch_model_head.bin")

    def __init__(self) -> None:
        super().__init__("prefix", ("native", "peft", "adapterhub"))

    def detect_foreign(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, "adapter_config.json")
        if meta.get("peft_type") == "PREFIX_TUNING":
            return "peft"
        if (meta.get("config") or {}).get("architecture") == "prefix_tuning" and "peft_type" not in meta:
            return "adapterhub"
        return None

    def import_foreign(self, source: str, directory: Path, base_dir: str | None) -> PromptArtifact:
        if source == "peft":
            return interop.import_peft(directory, base_dir)
        return interop.import_adapterhub(directory)

    def export_foreign(self, art: PromptArtifact, fmt: str, target: Target, with_head: bool) -> dict[str, bytes]:
        if fmt == "peft":
            return interop.export_peft(art, target, with_head)
        return interop.export_adapterhub(art, target, with_head)


PREFIX = PrefixKind()
