"""The face of the Compacter kind: a bottleneck adapter with PHM projections. It serves in the same mixed
forwards as ST-As, and is fusable like them; it does not merge (PHM factors do not average into PHM factors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace
from composer.compacter import interop
from composer.exporting import Target
from composer.method import as_directory, json_config


class CompacterKind(AdapterFace):
    fusable = True
    formats = ("native", "adapterhub")

    def __init__(self) -> None:
        super().__init__("compacter")

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, "adapter_config.json")
        raw = meta.get("config") or {}
        if "peft_type" not in meta and raw.get("phm_layer") and raw.get("architecture") in (None, "bottleneck"):
            return "adapterhub"
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        with as_directory(files) as d:
            return interop.import_adapterhub(files, d)

    def export(
        self, art: AdapterArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "adapterhub":
            return interop.to_hub(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "compacter", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


COMPACTER = CompacterKind()
