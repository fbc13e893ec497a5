"""The face of the p_tuning kind: a shallow prompt trained through a prompt encoder, served (collapsed) through the
prompt model like any prompt; imports and exports PEFT's P_TUNING."""

from __future__ import annotations

from pathlib import Path

from composer.exporting import Target
from composer.method import json_config
from composer.p_tuning import interop
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.kind import PromptFace


class PTuningKind(PromptFace):
    def __init__(self) -> None:
        super().__init__("p_tuning", ("native", "peft"))

    def detect_foreign(self, files: dict[str, bytes]) -> str | None:
        return "peft" if json_config(files, "adapter_config.json").get("peft_type") == "P_TUNING" else None

    def import_foreign(self, source: str, directory: Path, base_dir: str | None) -> PromptArtifact:
        return interop.import_peft(directory, base_dir)

    def export_foreign(self, art: PromptArtifact, fmt: str, target: Target, with_head: bool) -> dict[str, bytes]:
        return interop.export_peft(art, target, with_head)


P_TUNING = PTuningKind()
