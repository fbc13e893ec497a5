"""The face of the BitFit kind: bias deltas, served in the same mixed forwards as the other adapters (gathered
per linear). Neither reference library has BitFit as a saved module, so it downloads in our format only."""

from __future__ import annotations

from typing import Any

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_face import AdapterFace


class BitFitKind(AdapterFace):
    def __init__(self) -> None:
        super().__init__("bitfit")

    def method_config(self, art: AdapterArtifact, **extra: Any) -> dict[str, Any]:
        return {"method": "bitfit", "config": art.config.to_dict(), "max_length": art.max_length, **extra}


BITFIT = BitFitKind()
