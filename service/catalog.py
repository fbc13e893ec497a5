"""Registering what jobs consume: base models (identity computed by composer) and validated datasets."""

from __future__ import annotations

import os
from pathlib import Path

from composer.base import LoadedBase, derive, load_base
from composer.data import TaskSpec, label_histogram, parse_examples
from composer.errors import IncompatibleBaseError
from composer.quantize import set_precision
from registry_db.models import BaseModelRow, Dataset, Task
from registry_db.registry import Registry
from registry_db.repo import catalog


def task_spec(task: Task) -> TaskSpec:
    return TaskSpec(name=task.name, kind=task.kind, labels=tuple(task.labels), metric=task.metric)  # type: ignore[arg-type]


def register_base_model(reg: Registry, path: str | Path, name: str | None = None, num_layers: int | None = None):
    """Load the model once to compute its identity, then register it (idempotent by identity)."""
    base = load_base(path, name=name, num_hidden_layers=num_layers, device="cpu")
    with reg.tx() as s:
        row, created = catalog.register_base_model(
            s,
            name=base.identity.name,
            identity=base.identity.fingerprint,
            config_hash=base.identity.config_hash,
            weights_hash=base.identity.weights_hash,
            architecture=base.family,
            hidden_size=base.hidden_size,
            num_layers=base.num_layers,
            path=str(Path(path).resolve()),
        )
        return row, created


def detect_format(filename: str | None, data: bytes) -> str:
    if filename and filename.lower().endswith(".csv"):
        return "csv"
    if filename and filename.lower().endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "jsonl" if data.lstrip()[:1] == b"{" else "csv"


def upload_dataset(reg: Registry, owner_id: str, task_ref: str, split: str, data: bytes, filename: str | None = None):
    """Validate every row (DataError with the line number), store the file, register it. Same file twice: same row."""
    fmt = detect_format(filename, data)
    with reg.tx() as s:
        task = catalog.get_task(s, owner_id, task_ref)
        spec = task_spec(task)
    examples = parse_examples(data, fmt, spec)  # type: ignore[arg-type]
    histogram = label_histogram(examples) if spec.kind == "classification" else {}
    sha = reg.blobs.put(data)
    with reg.tx() as s:
        return catalog.add_dataset(s, task.id, split, fmt, sha, len(examples), histogram)


def load_dataset_examples(reg: Registry, ds: Dataset, task: Task):  # type: ignore[no-untyped-def]
    return parse_examples(reg.blobs.get(ds.sha256), ds.format, task_spec(task))  # type: ignore[arg-type]


def derived_weights(reg: Registry, sha: str, cache_dir: Path | None) -> dict:  # type: ignore[type-arg]
    """A derived base's weights. With a cache directory they are fetched from the blob store once per
    machine (into `<cache_dir>/bases/<sha>.safetensors`) and read from there by every later job; the
    blob store verifies the checksum, and the cached file is only ever written whole (rename)."""
    from safetensors.torch import load, load_file

    if cache_dir is None:
        return load(reg.blobs.get(sha))
    path = Path(cache_dir) / "bases" / f"{sha}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(reg.blobs.get(sha))
        os.replace(tmp, path)
    return load_file(path)


def load_registered_base(
    row: BaseModelRow,
    device: str | None = None,
    reg: Registry | None = None,
    cache_dir: Path | None = None,
    precision: str = "fp32",
    kernels: bool = True,
) -> LoadedBase:
    """Load a registered base model, refusing it if the files no longer match the registered identity.
    A derived base is its parent's files (`row.path`) with the fine-tuned weights from the blob store.
    `precision` "int8" or "nf4" quantises it; `kernels` False (a training process) builds no compiled kernels."""
    base = load_base(  # a base to quantise holds its own memory (`mapped`)
        row.path, name=row.name, num_hidden_layers=row.num_layers, device=device, mapped=precision == "fp32"
    )
    if row.weights_sha256 is not None:
        if reg is None:
            raise IncompatibleBaseError(f"base model {row.name!r} is derived: its weights are in the blob store")
        derive(base, row.name, derived_weights(reg, row.weights_sha256, cache_dir))
    set_precision(base, precision, kernels)  # after a derived base has its weights: they are what is quantised
    if base.identity.fingerprint != row.identity:
        raise IncompatibleBaseError(
            f"the model at {row.path} no longer matches base model {row.name!r} as registered "
            f"({base.identity.fingerprint[:12]} != {row.identity[:12]})"
        )
    return base
