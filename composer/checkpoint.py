"""Serialise nested training state (tensors + plain values) to one safetensors blob, without pickle.

Tensors go into the safetensors body; everything else (dict structure, ints, floats,
strings) goes as JSON into the header metadata. Dict keys keep their int/str type, so
an optimizer `state_dict` round-trips exactly.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from composer.errors import ArtifactError


def pack(state: Any) -> bytes:
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = obj.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v)] for k, v in obj.items()]}
        if isinstance(obj, list | tuple):
            return [walk(v) for v in obj]
        if obj is None or isinstance(obj, bool | int | float | str):
            return obj
        raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__}")

    meta = json.dumps(walk(state))
    return st_save(tensors, metadata={"state": meta})


def unpack(data: bytes) -> Any:
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"]["state"])
    except Exception as e:  # noqa: BLE001 - any parse failure means a bad checkpoint
        raise ArtifactError(f"checkpoint is not readable: {e}") from None

    def build(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            return {k: build(v) for k, v in obj["__dict__"]}
        if isinstance(obj, list):
            return [build(v) for v in obj]
        return obj

    return build(meta)
