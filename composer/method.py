"""The face of a method kind: everything api, workers and serving need to know about one kind.

Each kind (st_a, mt_a, fusion, soft_prompt) implements `MethodKind` once, in its family
package (`composer/<method>/kind.py`), and `composer.kinds`
keys them by name, as peft registers its tuners. Callers look the face up by the
registry row's kind and never branch on the kind themselves.

The face works on artifacts and bytes only; it knows nothing of databases or HTTP.
"""

from __future__ import annotations

import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from composer.base import BaseIdentity, LoadedBase
    from composer.encoder import AdaptedEncoder
    from composer.exporting import Target
    from composer.heads import HeadConfig
    from composer.prompts.model import PromptModel


class Artifact(Protocol):
    """What every kind's artifact carries (adapters, fusions and prompts alike)."""

    name: str
    hidden_size: int
    base: BaseIdentity | None
    labels: list[str] | None
    metrics: dict[str, Any]
    max_length: int | None
    head: HeadConfig | None  # what a prediction goes through; None: the module cannot serve on its own

    @property
    def kind(self) -> str: ...


@dataclass
class Models:
    """The modules resident on one base: the adapter family's encoder and the prompt family's model."""

    base: LoadedBase
    encoder: AdaptedEncoder
    prompts: PromptModel


@dataclass
class Prediction:
    logits: list[torch.Tensor]  # one per row: [C] (or a scalar for regression)
    attention: dict[str, torch.Tensor] | None = None  # fusion attention per site, [B, N]


class MethodKind(ABC):
    name: str  # the registry kind
    file_names: tuple[str, str]  # (config, weights) in our format
    fusable: bool = False  # can be a member of a fusion
    ensemble_member: bool = False  # can be one prompt of a prompt ensemble
    plans: tuple[str, ...] = ()  # execution plans the runtime may measure and choose between (`predict_planned`)
    importable: bool = True  # can be uploaded on its own through /v1/adapters/import
    prefetchable: bool = False  # serving can build it ahead of its first request and keep it in host memory
    merge_methods: tuple[str, ...] = ()  # how modules of this kind merge into one (`merge`); () : they do not
    # a transfer source: its adapter gives the encoder features that a ranking scores, and a new adapter of
    # its config can start from its weights (`warm_start`)
    rankable: bool = False
    composed: bool = False  # a tree of other modules (a saved composition): it serves through that tree
    # what it may be in a composition tree: "member" (a leaf: an adapter on the encoder), "fuse" (a `Fuse`
    # node), or None (nothing)
    in_trees: str | None = None
    # the pickles its importer reads, with torch.load(weights_only=True) only; every other pickle is refused
    weights_only_pickles: tuple[str, ...] = ()

    # -- files <-> artifact -----------------------------------------------------------------
    @abstractmethod
    def from_files(self, config: bytes, weights: bytes) -> Artifact: ...

    @abstractmethod
    def to_files(self, art: Any) -> tuple[bytes, bytes]: ...

    def detect(self, files: dict[str, bytes]) -> str | None:
        """The source format (`ours`, `adapterhub`, `peft`) if these files are an import of this kind."""
        return None

    def import_files(self, files: dict[str, bytes], base_dir: str | None) -> Artifact:
        from composer.errors import ArtifactError

        raise ArtifactError(f"{self.name} modules cannot be imported; import their members instead")

    # -- export -----------------------------------------------------------------------------
    formats: tuple[str, ...] = ("native",)  # what `export` writes: ours, and the references' layouts

    def export(
        self, art: Any, fmt: str, target: Target, members: Sequence[Any] = (), with_head: bool = True
    ) -> dict[str, bytes]:
        """The module's files (by path) in `fmt`; a fusion's members are written beside it."""
        if fmt not in self.formats:
            from composer.errors import ConfigError

            raise ConfigError(f"format: a {self.name} downloads as {list(self.formats)}, not {fmt!r}")
        config, weights = self.to_files(art)
        return {self.file_names[0]: config, self.file_names[1]: weights}

    def merge(
        self, members: Sequence[Any], weights: Sequence[float], method: str, density: float, seed: int, family: str
    ) -> Any:
        """One module of this kind from `members` (no head: the caller gives it one)."""
        from composer.errors import ConfigError

        raise ConfigError(f"{self.name} modules do not merge")

    # -- registry facts ---------------------------------------------------------------------
    @abstractmethod
    def param_count(self, art: Any) -> int: ...

    @abstractmethod
    def method_config(self, art: Any, **extra: Any) -> dict[str, Any]: ...

    # -- attach and serve -------------------------------------------------------------------
    @abstractmethod
    def attach(self, models: Models, art: Any, name: str, members: Sequence[str] = ()) -> None:
        """Build the module (and its head) on the resident models under `name`."""

    @abstractmethod
    def remove(self, models: Models, name: str) -> None: ...

    def build(self, models: Models, art: Any, name: str) -> Any | None:
        """The module built for these models but not attached, for `reattach` (serving builds it outside its
        locks and can keep it in the host tier); None: this kind only comes in through `attach`."""
        return None

    def detach(self, models: Models, name: str) -> Any | None:
        """Take the module off the resident models and return what `reattach` needs to put it back without
        building it again (kept in the host tier); None: it comes back through `attach`."""
        self.remove(models, name)
        return None

    def reattach(self, models: Models, name: str, held: Any) -> None:
        raise NotImplementedError(f"{self.name} modules come back through attach")

    @abstractmethod
    def nbytes(self, models: Models, name: str) -> int: ...

    def serving_state(self) -> dict[str, str]:
        """What an operator should see of how this process serves the kind (/serving/stats), where it can
        differ between machines: a compiled kernel loaded or not. Empty for most kinds."""
        return {}

    def max_length(self, art: Any, limit: int) -> int:
        """Where serving truncates inputs: the length the module was trained with, else the base's limit."""
        return min(art.max_length, limit) if art.max_length else limit

    def group(self, name: str) -> tuple[str, str]:
        """Rows whose modules share a group run in one forward."""
        return (self.name, name)

    def plan_key(self, models: Models, names: Sequence[str]) -> Any:
        """What, beyond the batch's shape, the speeds of `plans` depend on for these rows; None: they coincide
        (the runtime then measures nothing)."""
        return None

    @abstractmethod
    def predict(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], return_attention: bool = False
    ) -> Prediction:
        """One forward for a batch whose row i uses module `names[i]` (all of one group)."""

    def predict_planned(
        self, models: Models, names: Sequence[str], batch: dict[str, torch.Tensor], plan: str
    ) -> Prediction:
        """`predict` under one of the kind's `plans`: how the rows are executed, never what they compute (the kinds
        with plans return no fusion attention)."""
        return self.predict(models, names, batch)


def json_config(files: dict[str, bytes], name: str) -> dict[str, Any]:
    """The JSON object in `files[name]`, or {} when it is missing or not a JSON object (detection only)."""
    try:
        meta = json.loads(files[name]) if name in files else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


@contextmanager
def as_directory(files: dict[str, bytes]) -> Iterator[Path]:
    """The files in a temporary directory, for importers that read a directory."""
    with tempfile.TemporaryDirectory() as tmp:
        for fname, blob in files.items():
            (Path(tmp) / fname).write_bytes(blob)
        yield Path(tmp)


def module_bytes(*modules: torch.nn.Module | None) -> int:
    return sum(p.numel() * p.element_size() for m in modules if m is not None for p in m.parameters())
