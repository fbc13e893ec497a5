"""The face of the prompt family's kind: soft_prompt (one prompt with its own head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from composer.exporting import Target
from composer.method import MethodKind, Models, Prediction, as_directory, json_config, module_bytes
from composer.prompts import artifacts
from composer.prompts.artifacts import PromptArtifact


class SoftPromptKind(MethodKind):
    name = "soft_prompt"
    file_names = ("prompt_config.json", "prompt.safetensors")
    ensemble_member = True
    formats = ("native", "peft")

    def export(
        self, art: PromptArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt == "peft":
            from composer.prompts.export import prompt_to_peft

            return prompt_to_peft(art, target, with_head=with_head)
        return super().export(art, fmt, target)

    def from_files(self, config: bytes, weights: bytes) -> PromptArtifact:
        return artifacts.from_files(config, weights)

    def to_files(self, art: PromptArtifact) -> tuple[bytes, bytes]:
        return artifacts.to_files(art)

    def detect(self, files: dict[str, bytes]) -> str | None:
        if json_config(files, self.file_names[0]).get("format") == artifacts.FORMAT:
            return "ours"
        meta = json_config(files, "adapter_config.json")
        if meta.get("peft_type") == "PROMPT_TUNING":
            return "peft"
        if (meta.get("config") or {}).get("architecture") == "prompt_tuning":
            return "adapterhub"
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> PromptArtifact:
        source = self.detect(files)
        if source == "ours":
            return self.from_files(files[self.file_names[0]], files.get(self.file_names[1], b""))
        with as_directory(files) as d:
            if source == "peft":
                return artifacts.import_peft_prompt(d, base_dir=base_dir)
            return artifacts.import_adapterhub_prompt(d)

    def param_count(self, art: PromptArtifact) -> int:
        return int(art.prompt.numel() + sum(t.numel() for t in art.head_tensors.values()))

    def method_config(self, art: PromptArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "prompt_tuning", "config": art.config.to_dict(), "max_length": art.max_length, **extra}

    def attach(self, models: Models, art: PromptArtifact, name: str, members: Sequence[str] = ()) -> None:
        models.prompts.attach(art, name=name)

    def remove(self, models: Models, name: str) -> None:
        models.prompts.remove(name)

    def nbytes(self, models: Models, name: str) -> int:
        return module_bytes(models.prompts.prompts[name], models.prompts.heads[name])

    def max_length(self, art: PromptArtifact, limit: int) -> int:
        if art.config.kind == "shallow":
            limit -= art.config.length  # the prompt takes positions in front of the input
        return min(art.max_length, limit) if art.max_length else limit

    def predict(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], return_attention: bool = False
    ) -> Prediction:
        logits = models.prompts.logits([names[0]], batch)[:, 0]  # [B, C], or [B] for regression
        return Prediction([row.float().cpu() for row in logits])


SOFT_PROMPT = SoftPromptKind()
