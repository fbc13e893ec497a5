"""The face of the diff kind: a sparse delta on the frozen linears, served in the same mixed forwards as the other
adapters (each row adds its own module's delta). Neither reference library saves diff pruning, so it downloads in
our format only; it is not fusable, nor a transfer source (a new diff starts dense)."""

from __future__ import annotations

from typing import Any

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace
from composer.diff.kernel import KERNEL


class DiffKind(AdapterFace):
    rankable = False

    def __init__(self) -> None:
        super().__init__("diff")

    def serving_state(self) -> dict[str, str]:
        """Whether its rows serve through the C++ kernel (`composer.diff.kernel`) or MKL's product, and why."""
        return {"kernel": KERNEL.state()}

    def param_count(self, art: AdapterArtifact) -> int:
        """What it keeps: the nonzero deltas (and the head), not the indices beside them."""
        return int(sum(v.numel() for k, v in art.tensors.items() if not k.endswith("_index")))

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "diff", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


DIFF = DiffKind()
