"""The method kinds by name, as peft registers its tuners. api, workers and serving look a kind's
face up here (`get(row.kind)`) instead of branching on the kind."""

from __future__ import annotations

import os
from pathlib import Path

from composer.adapters.kind import FUSION, LORA, MT_A, ST_A
from composer.base import LoadedBase
from composer.errors import ArtifactError, ConfigError
from composer.method import Artifact, MethodKind, Models
from composer.prompts.kind import SOFT_PROMPT

KINDS: dict[str, MethodKind] = {k.name: k for k in (ST_A, MT_A, LORA, FUSION, SOFT_PROMPT)}


def get(name: str) -> MethodKind:
    if name not in KINDS:
        raise ConfigError(f"unknown method kind {name!r}; known: {sorted(KINDS)}")
    return KINDS[name]


def detect(files: dict[str, bytes]) -> tuple[MethodKind, str]:
    """Which kind, and which source format (ours, adapterhub, peft), a set of files is."""
    for kind in KINDS.values():
        source = kind.detect(files)
        if source is not None:
            return kind, source
    raise ArtifactError(
        "no config of a known format: ours (adapter_config.json, fusion_config.json, prompt_config.json), "
        "AdapterHub bottleneck, LoRA or prompt-tuning adapters, or PEFT LoRA or prompt tuning"
    )


def load_files(files: dict[str, bytes], base_dir: str | os.PathLike[str] | None = None) -> Artifact:
    """Any importable artifact from its files, ours or foreign."""
    kind, _ = detect(files)
    return kind.import_files(files, str(base_dir) if base_dir is not None else None)


def load_dir(directory: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> Artifact:
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"{d} is not a directory")
    return load_files({p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}, base_dir)


def check_fits(kind: MethodKind, art: Artifact, base: LoadedBase) -> None:
    """Attach `art` to a throwaway model on `base`, so every name, shape and base check that serving
    would make refuses a bad upload now (ComposerError), before anything is registered."""
    from composer.adapters.model import AdaptedEncoder
    from composer.prompts.model import PromptModel

    kind.attach(Models(base, AdaptedEncoder(base), PromptModel(base)), art, "__probe__")
