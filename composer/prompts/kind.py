"""The faces of the prompt family: what soft prompts, P-tuning and prefix tuning share (one prompt with its own
head, served by the prompt model), and the soft_prompt kind itself. The prefix and p_tuning packages subclass
`PromptFace` with their own detection and formats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from composer.exporting import Target
from composer.method import MethodKind, Models, as_directory, json_config, module_bytes
from composer.prompts import artifacts
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.prompt import PromptConfig
from composer.rows import InRows


class PromptFace(InRows, MethodKind):
    file_names = ("prompt_config.json", "prompt.safetensors")
    ensemble_member = True

    def __init__(self, name: str, formats: tuple[str, ...]) -> None:
        self.name = name
        self.formats = formats

    def export(
        self, art: PromptArtifact, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        if fmt != "native" and fmt in self.formats:
            return self.export_foreign(art, fmt, target, with_head)
        return super().export(art, fmt, target)

    def export_foreign(self, art: PromptArtifact, fmt: str, target: Target, with_head: bool) -> dict[str, bytes]:
        raise NotImplementedError

    def from_files(self, config: bytes, weights: bytes) -> PromptArtifact:
        return artifacts.from_files(config, weights)

    def to_files(self, art: PromptArtifact) -> tuple[bytes, bytes]:
        return artifacts.to_files(art)

    def detect(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, self.file_names[0])
        if meta.get("format") == artifacts.FORMAT:
            try:  # the kind follows from the config (older files wrote soft_prompt for deep prompts too)
                kind = PromptConfig.from_dict(meta.get("config") or {}).registry_kind
            except (TypeError, ValueError):
                kind = "soft_prompt"  # from_files says what is wrong with it
            return "ours" if kind == self.name else None
        return self.detect_foreign(files)

    def detect_foreign(self, files: dict[str, bytes]) -> str | None:
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> PromptArtifact:
        source = self.detect(files)
        if source == "ours":
            return self.from_files(files[self.file_names[0]], files.get(self.file_names[1], b""))
        with as_directory(files) as d:
            return self.import_foreign(source or "", d, base_dir)

    def import_foreign(self, source: str, directory: Any, base_dir: str | None) -> PromptArtifact:
        raise NotImplementedError

    def param_count(self, art: PromptArtifact) -> int:
        return int(art.prompt.numel() + sum(t.numel() for t in art.head_tensors.values()))

    def method_config(self, art: PromptArtifact, **extra: Any) -> dict[str, Any]:
        method = artifacts.METHODS[art.kind]
        return {"method": method, "config": art.config.to_dict(), "max_length": art.max_length, **extra}

    def attach(self, models: Models, art: PromptArtifact, name: str, members: Sequence[str] = ()) -> None:
        models.prompts.attach(art, name=name)

    def remove(self, models: Models, name: str) -> None:
        models.prompts.remove(name)

    def nbytes(self, models: Models, name: str) -> int:
        return module_bytes(models.prompts.prompts[name], models.prompts.heads[name])

    def max_length(self, art: PromptArtifact, limit: int) -> int:
        limit -= art.config.positions_taken  # a shallow prompt's, or a prefix the real tokens' positions follow
        return min(art.max_length, limit) if art.max_length else limit


class SoftPromptKind(PromptFace):
    def __init__(self) -> None:
        super().__init__("soft_prompt", ("native", "peft"))

    def export_foreign(self, art: PromptArtifact, fmt: str, target: Target, with_head: bool) -> dict[str, bytes]:
        from composer.prompts.export import prompt_to_peft

        return prompt_to_peft(art, target, with_head=with_head)

    def detect_foreign(self, files: dict[str, bytes]) -> str | None:
        meta = json_config(files, "adapter_config.json")
        if meta.get("peft_type") == "PROMPT_TUNING":
            return "peft"
        if (meta.get("config") or {}).get("architecture") == "prompt_tuning":
            return "adapterhub"
        return None

    def import_foreign(self, source: str, directory: Any, base_dir: str | None) -> PromptArtifact:
        if source == "peft":
            return artifacts.import_peft_prompt(directory, base_dir=base_dir)
        return artifacts.import_adapterhub_prompt(directory)


SOFT_PROMPT = SoftPromptKind()
