"""What exports to the reference libraries (AdapterHub `adapters` 1.3.0, PEFT 0.21) share across method
families: the base they are for, and the heads, which the references compute only in some shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from composer.errors import ArtifactError, ConfigError
from composer.heads import HeadConfig
from composer.safetensors_io import read_tensors, read_weights_only, tensors_to_bytes

HUB_VERSION = "adapters.1.3.0"
# the attribute that holds the encoder in the reference's models, by our family name
PREFIX = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "electra": "electra"}


@dataclass(frozen=True)
class Target:
    """The base an export is for: what the reference's config files name."""

    name: str
    family: str
    num_layers: int
    num_heads: int = 0
    intermediate_size: int = 0  # the FFN's inner width (what an empty export of an FFN linear is shaped by)

    @property
    def prefix(self) -> str:
        if self.family not in PREFIX:
            raise ConfigError(f"format: exports support {sorted(PREFIX)} bases, not {self.family!r}")
        return PREFIX[self.family]


def to_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def hub_meta(name: str, target: Target, hidden: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "model_class": "BertAdapterModel" if target.prefix == "bert" else None,
        "model_name": target.name,
        "model_type": target.family,
        "name": name,
        "version": HUB_VERSION,
    }


def exportable_head(head: HeadConfig | None, with_head: bool, what: str) -> bool:
    """Whether to write the head; refuses a head the reference would compute differently, unless dropped."""
    if head is None or not with_head:
        return False
    if head.pooling == "mean":
        raise ConfigError(
            f"with_head: {what}'s head pools the mean of the tokens; the reference's heads read the first token. "
            "Download it with format=native, or export the module without its head (with_head=false)"
        )
    return True


def hub_files(
    art: Any,
    target: Target,
    raw: dict[str, Any],
    weights: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor],
    with_head: bool,
) -> dict[str, bytes]:
    """An AdapterHub `save_adapter` folder: its config (`raw` under the common metadata), its weights, and the
    head beside them when it has one the reference computes alike."""
    files = {
        "adapter_config.json": to_json({**hub_meta(art.name, target, art.hidden_size), "config": raw}),
        "adapter.safetensors": tensors_to_bytes(weights),
    }
    if exportable_head(art.head, with_head, f"adapter {art.name!r}"):
        files.update(hub_head(art.name, art.head, head, art.labels, target, art.hidden_size))
    return files


def hub_head(
    name: str, head: HeadConfig, tensors: dict[str, torch.Tensor], labels: list[str] | None, target: Target, hidden: int
) -> dict[str, bytes]:
    """AdapterHub's `ClassificationHead`: Sequential(Dropout, Linear, act, Dropout, Linear) for two layers."""
    last = 3 * head.layers - 2
    index = {"dense": 1, "out": last}
    weights = {f"heads.{name}.{index[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in tensors.items()}
    n = head.num_labels
    config = {
        "head_type": "regression" if head.kind == "regression" else "classification",
        "num_labels": n,
        "layers": head.layers,
        "activation_function": head.activation,
        "use_pooler": False,
        "bias": True,
        "dropout_prob": head.dropout,
        "label2id": {lab: i for i, lab in enumerate(labels or [f"LABEL_{i}" for i in range(n)])},
    }
    return {
        "head_config.json": to_json({**hub_meta(name, target, hidden), "config": config}),
        "model_head.safetensors": tensors_to_bytes(weights),
    }


def peft_head(head: HeadConfig | None, tensors: dict[str, torch.Tensor], with_head: bool, what: str, root: str):  # type: ignore[no-untyped-def]
    """A SEQ_CLS head as PEFT's `modules_to_save`: our dense + tanh is the pooler, our output the classifier.
    `root` is where the task model sits in PEFT's keys (`base_model.model.` for LoRA, `base_model.` for prompts)."""
    if not exportable_head(head, with_head, what):
        return None, {}
    assert head is not None
    if head.layers != 2 or head.activation != "tanh":
        raise ConfigError(f"with_head: {what}'s head is not dense + tanh + linear, which is all PEFT's SEQ_CLS has")
    weights = {f"{root}{{prefix}}.pooler.dense.{p}": tensors[f"dense.{p}"] for p in ("weight", "bias")}
    weights.update({f"{root}classifier.{p}": tensors[f"out.{p}"] for p in ("weight", "bias")})
    return ["classifier", "pooler"], weights


CONVERT_HINT = (
    "convert it once, in an environment you trust, with: "
    'python -c "import torch, safetensors.torch as s; '
    "s.save_file(torch.load('pytorch_adapter.bin', weights_only=True), 'adapter.safetensors')\""
)


def read_hub_head(
    d: Path, weights_only_pickle: bool = False
) -> tuple[HeadConfig | None, list[str] | None, dict[str, torch.Tensor]]:
    """An AdapterHub head saved beside a module (`head_config.json` + `model_head.safetensors`): its config,
    labels and tensors (`head.*`); nothing when there is none. A pickled head is refused, except beside a
    prefix (`weights_only_pickle`), which adapters 1.3 saves only as pickles: read with weights_only=True."""
    pickled = (d / "pytorch_model_head.bin").exists() and not (d / "model_head.safetensors").exists()
    if pickled and not weights_only_pickle:
        raise ArtifactError(f"pytorch_model_head.bin is a pickle and is refused; {CONVERT_HINT}")
    if not (d / "head_config.json").is_file():
        return None, None, {}
    raw = json.loads((d / "head_config.json").read_text())["config"]
    if raw.get("head_type") not in ("classification", "regression") or raw.get("use_pooler"):
        raise ConfigError(f"unsupported AdapterHub head {raw.get('head_type')!r} (use_pooler={raw.get('use_pooler')})")
    n = int(raw["num_labels"])
    cfg = HeadConfig(
        kind="regression" if n == 1 else "classification",
        num_labels=n,
        layers=int(raw.get("layers", 2)),
        activation=raw.get("activation_function") or "tanh",
        pooling="cls",
        dropout=float(raw.get("dropout_prob") or 0.1),
    )
    labels = None
    if raw.get("label2id"):
        labels = [k for k, _ in sorted(raw["label2id"].items(), key=lambda kv: kv[1])]
    if pickled:
        blob = (d / "pytorch_model_head.bin").read_bytes()
        tensors = read_weights_only(blob, "pytorch_model_head.bin", CONVERT_HINT.replace("adapter", "model_head"))
    else:
        tensors = read_tensors(d / "model_head.safetensors")
    last = 3 * cfg.layers - 2  # index of the output Linear in AdapterHub's Sequential
    names = {"1": "dense", str(last): "out"} if cfg.layers == 2 else {str(last): "out"}
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        idx, param = k.split(".")[-2:]
        if idx not in names:
            raise ArtifactError(f"unexpected AdapterHub head parameter {k!r}")
        out[f"head.{names[idx]}.{param}"] = v
    return cfg, labels, out
