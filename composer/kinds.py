"""The method kinds by name, as peft registers its tuners. api, workers and serving look a kind's
face up here (`get(row.kind)`) instead of branching on the kind."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from composer.adalora.kind import ADALORA
from composer.bitfit.kind import BITFIT
from composer.bottleneck.kind import MT_A, ST_A
from composer.compacter.kind import COMPACTER
from composer.compositions.kind import COMPOSITION
from composer.diff.kind import DIFF
from composer.errors import ArtifactError, ConfigError
from composer.exporting import CONVERT_HINT
from composer.fusion.kind import FUSION
from composer.ia3.kind import IA3
from composer.lora.kind import LORA
from composer.method import Artifact, MethodKind, json_config
from composer.p_tuning.kind import P_TUNING
from composer.prefix.kind import PREFIX
from composer.prompts.kind import SOFT_PROMPT
from composer.safetensors_io import PICKLE_SUFFIXES

KINDS: dict[str, MethodKind] = {
    k.name: k
    for k in (
        ST_A,
        MT_A,
        LORA,
        ADALORA,
        IA3,
        BITFIT,
        DIFF,
        COMPACTER,
        FUSION,
        SOFT_PROMPT,
        P_TUNING,
        PREFIX,
        COMPOSITION,
    )
}


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
        "AdapterHub bottleneck, Compacter, LoRA, (IA)³, prompt-tuning or prefix-tuning adapters, or PEFT LoRA, "
        "AdaLoRA, (IA)³, prompt tuning, P-tuning or prefix tuning"
    )


def load_files(files: dict[str, bytes], base_dir: str | os.PathLike[str] | None = None) -> Artifact:
    """Any importable artifact from its files, ours or foreign."""
    kind, _ = detect(files)
    return import_as(kind, files, str(base_dir) if base_dir is not None else None)


def import_as(kind: MethodKind, files: dict[str, bytes], base_dir: str | None) -> Artifact:
    """`kind`'s import of these files. Pickles are refused, except those the kind reads with weights_only=True."""
    pickles = sorted(n for n in files if n.endswith(PICKLE_SUFFIXES) and n not in kind.weights_only_pickles)
    if pickles:
        raise ArtifactError(f"{pickles[0]} is a pickle and is refused for a {kind.name}; {CONVERT_HINT}")
    return kind.import_files(files, base_dir)


def load_dir(directory: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> Artifact:
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"{d} is not a directory")
    return load_files({p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}, base_dir)


@dataclass
class ArchivePlan:
    """What an uploaded archive holds: one module (`single`), or an AdapterHub fusion saved with its
    members (`fusion`, and `members` by folder in the fusion's order)."""

    single: dict[str, bytes] | None = None
    fusion: dict[str, bytes] | None = None
    members: dict[str, dict[str, bytes]] = field(default_factory=dict)


def plan_archive(files: dict[str, bytes]) -> ArchivePlan:
    """Read an archive's layout from its file paths. One folder of files (at the root or nested) is one
    module. Folders of adapters plus one folder with `adapter_fusion_config.json` are a fusion with its
    members (AdapterHub's `save_adapter` per member and `save_adapter_fusion`). Anything else holding
    several modules is refused, listing what was found."""
    folders: dict[str, dict[str, bytes]] = {}
    for path, blob in files.items():
        parent, _, name = path.rpartition("/")
        folders.setdefault(parent, {})[name] = blob
    if len(folders) == 1:
        return ArchivePlan(single=next(iter(folders.values())))
    fusions = [f for f, fs in folders.items() if "adapter_fusion_config.json" in fs]
    found = []
    for folder, fs in sorted(folders.items()):
        try:
            kind, source = detect(fs)
            found.append(f"{folder or '.'}/: {kind.name} ({source})")
        except ArtifactError:
            found.append(f"{folder or '.'}/: {sorted(fs)}")
    if len(fusions) != 1:
        raise ArtifactError(
            f"the archive holds {len(folders)} folders in no layout this service knows: {'; '.join(found)}. "
            "Upload one module per archive, or an AdapterHub fusion saved with its members "
            "(one folder per member from save_adapter, and one folder from save_adapter_fusion)"
        )
    fusion = folders.pop(fusions[0])
    names = json_config(fusion, "adapter_fusion_config.json").get("adapter_names") or []
    by_name = {f.rpartition("/")[2]: f for f in folders}
    by_name.update({json_config(fs, "adapter_config.json").get("name"): f for f, fs in folders.items()})
    missing = [n for n in names if n not in by_name]
    if missing or len(names) != len(folders):
        raise ArtifactError(
            f"the fusion fuses {names}, but the archive's member folders are {sorted(folders)} "
            f"(missing: {missing}); found: {'; '.join(found)}"
        )
    return ArchivePlan(fusion=fusion, members={by_name[n]: folders[by_name[n]] for n in names})
