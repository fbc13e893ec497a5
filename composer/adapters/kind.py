"""The faces of the adapter family's kinds: st_a and mt_a (bottleneck adapters) and fusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from composer.adapters import artifacts, export, fusion_artifacts
from composer.adapters.artifacts import AdapterArtifact
from composer.adapters.fusion_artifacts import FusionArtifact
from composer.composition import Fuse, Mixed, Single
from composer.exporting import Target
from composer.heads import pool
from composer.method import MethodKind, Models, Prediction, as_directory, json_config, module_bytes


def _rows(names: Sequence[str], hidden: torch.Tensor, mask: torch.Tensor, heads: Any) -> list[torch.Tensor]:
    """Each row's own head on its own hidden states. The pooling runs once for all rows (per pooling kind
    the heads use); each distinct head then classifies its rows' pooled vectors."""
    distinct = list(dict.fromkeys(names))
    if len(distinct) == 1:
        return list(heads[distinct[0]](hidden, mask).float().cpu())
    pooled = {p: pool(hidden, mask, p) for p in {heads[n].cfg.pooling for n in distinct}}
    out: list[torch.Tensor | None] = [None] * len(names)
    for head in distinct:
        idx = [i for i, n in enumerate(names) if n == head]
        module = heads[head]
        rows = pooled[module.cfg.pooling].index_select(0, torch.tensor(idx, device=hidden.device))
        for i, logits in zip(idx, module.classify(rows).float().cpu(), strict=True):
            out[i] = logits
    return out  # type: ignore[return-value]


class BottleneckKind(MethodKind):
    """A bottleneck adapter and its head: an ST-A, or one MT-A member."""

    file_names = (artifacts.CONFIG_NAME, artifacts.WEIGHTS_NAME)
    fusable = True
    prefetchable = True
    formats = ("native", "adapterhub")

    def export(
        self, art: AdapterArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "adapterhub":
            return export.bottleneck_to_hub(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def __init__(self, name: str):
        self.name = name

    def from_files(self, config: bytes, weights: bytes) -> AdapterArtifact:
        return artifacts.from_files(config, weights)

    def to_files(self, art: AdapterArtifact) -> tuple[bytes, bytes]:
        return artifacts.to_files(art)

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, artifacts.CONFIG_NAME)
        if not meta or self.name != "st_a":  # one face detects bottleneck files; the artifact names its kind
            return None
        if meta.get("format") == artifacts.FORMAT:
            return "ours"
        if "config" in meta and "hidden_size" in meta and "peft_type" not in meta:
            arch = (meta.get("config") or {}).get("architecture")
            return "adapterhub" if arch in (None, "bottleneck") else None
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        if json_config(files, artifacts.CONFIG_NAME).get("format") == artifacts.FORMAT:
            return self.from_files(files[artifacts.CONFIG_NAME], files.get(artifacts.WEIGHTS_NAME, b""))
        from composer.adapters.hub import import_adapterhub

        with as_directory(files) as d:
            return import_adapterhub(d)

    def param_count(self, art: AdapterArtifact) -> int:
        return int(sum(t.numel() for k, t in art.tensors.items() if k.startswith("adapter.")))

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "bottleneck", "config": art.config.to_dict(), "max_length": art.max_length, **extra}

    def attach(self, models: Models, art: AdapterArtifact, name: str, members: Sequence[str] = ()) -> None:
        self.reattach(models, name, self.build(models, art, name))

    def build(self, models: Models, art: AdapterArtifact, name: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        return artifacts.build(models.encoder, art, share=True)  # serving: inference only, one copy

    def remove(self, models: Models, name: str) -> None:
        models.encoder.remove(name)

    def detach(self, models: Models, name: str) -> tuple[torch.nn.Module, torch.nn.Module | None] | None:
        """The adapter and its head, off the base. On CPU they stay built beside their artifact (whose tensors
        they share); on a GPU they are dropped, and a reload copies the artifact over again."""
        enc = models.encoder
        held = (enc.adapters[name], enc.heads[name] if name in enc.heads else None)
        enc.remove(name)
        return held if enc.device.type == "cpu" else None

    def reattach(self, models: Models, name: str, held: tuple[torch.nn.Module, torch.nn.Module | None]) -> None:
        models.encoder.put(name, *held)

    def nbytes(self, models: Models, name: str) -> int:
        enc = models.encoder
        return module_bytes(enc.adapters[name], enc.heads[name] if name in enc.heads else None)

    def group(self, name: str) -> tuple[str, str]:
        return ("adapters", "")  # ST-A, MT-A and LoRA rows on any adapters share one mixed forward

    def predict(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], return_attention: bool = False
    ) -> Prediction:
        comp = Single(names[0]) if len(set(names)) == 1 else Mixed(tuple(names))
        hidden = models.encoder(**batch, composition=comp).hidden
        return Prediction(_rows(names, hidden, batch["attention_mask"], models.encoder.heads))


class LoraKind(BottleneckKind):
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
        return MethodKind.export(self, art, fmt, target)

    def __init__(self) -> None:
        super().__init__("lora")

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, artifacts.CONFIG_NAME)
        if meta.get("peft_type") == "LORA":
            return "peft"
        if (meta.get("config") or {}).get("architecture") == "lora" and "peft_type" not in meta:
            return "adapterhub"
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> AdapterArtifact:
        from composer.adapters.lora_import import import_adapterhub_lora, import_peft_lora

        with as_directory(files) as d:
            if self.detect(files) == "peft":
                return import_peft_lora(files, d, base_dir)
            return import_adapterhub_lora(files, d)

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "lora", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


class FusionKind(MethodKind):
    """An AdapterFusion over registered adapters, with the target task's head."""

    name = "fusion"
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
        return Prediction(_rows(names, out.hidden, batch["attention_mask"], models.encoder.heads), out.fusion_attention)


ST_A, MT_A, LORA, FUSION = BottleneckKind("st_a"), BottleneckKind("mt_a"), LoraKind(), FusionKind()
