"""The faces of the bottleneck method's kinds: st_a (a single-task adapter) and mt_a (a multi-task adapter,
bound to the derived base it was trained with)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace
from composer.bottleneck import export
from composer.bottleneck.merge import merge_bottlenecks
from composer.exporting import Target
from composer.merging import METHODS
from composer.method import as_directory, json_config


class BottleneckKind(AdapterFace):
    """A bottleneck adapter and its head: an ST-A, or one MT-A member."""

    fusable = True
    formats = ("native", "adapterhub")

    def export(
        self, art: AdapterArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "adapterhub":
            return export.bottleneck_to_hub(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, artifacts.CONFIG_NAME)
        if not meta or self.name != "st_a":  # one face detects bottleneck files; the artifact names its kind
            return None
        if meta.get("format") == artifacts.FORMAT:
            return "ours"
        if "config" in meta and "hidden_size" in meta and "peft_type" not in meta:
            arch = (meta.get("config") or {}).get("architecture")
            phm = (meta.get("config") or {}).get("phm_layer")  # Compacter's face reads those
            return "adapterhub" if arch in (None, "bottleneck") and not phm else None
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        if json_config(files, artifacts.CONFIG_NAME).get("format") == artifacts.FORMAT:
            return self.from_files(files[artifacts.CONFIG_NAME], files.get(artifacts.WEIGHTS_NAME, b""))
        from composer.bottleneck.hub import import_adapterhub

        with as_directory(files) as d:
            return import_adapterhub(d)

    merge_methods = METHODS

    def merge(self, members, weights, method, density, seed, family):  # type: ignore[no-untyped-def]
        return self.merged(members, *merge_bottlenecks(members, weights, method, density, seed))

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "bottleneck", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


ST_A, MT_A = BottleneckKind("st_a"), BottleneckKind("mt_a")
