"""A fusion with its members in AdapterHub's layout: a folder per member (`save_adapter`) and one for the
fusion and its head (`save_adapter_fusion`). The members are bottleneck adapters, written by their own export."""

from __future__ import annotations

from composer.adapter_artifact import AdapterArtifact
from composer.bottleneck.export import bottleneck_to_hub
from composer.errors import ConfigError
from composer.exporting import Target, exportable_head, hub_head, hub_meta, to_json
from composer.fusion.artifacts import FusionArtifact
from composer.safetensors_io import tensors_to_bytes


def fusion_to_hub(
    art: FusionArtifact, members: list[AdapterArtifact], target: Target, with_head: bool = True
) -> dict[str, bytes]:
    """A folder per member (save_adapter) and one for the fusion and its head (save_adapter_fusion)."""
    cfg = art.config
    if cfg.shared or cfg.temperature != 1.0:
        raise ConfigError("fusion: AdapterHub fusions have one module per site and temperature 1")
    names = list(dict.fromkeys(m.name for m in members))
    if len(names) != len(members):
        names = [f"{m.name}_{i}" for i, m in enumerate(members)]
    files: dict[str, bytes] = {}
    for member, name in zip(members, names, strict=True):
        for fname, blob in bottleneck_to_hub(member, target, name=name, with_head=False).items():
            files[f"{name}/{fname}"] = blob
    fusion_name = ",".join(names)
    raw = {
        "key": True,
        "query": True,
        "value": cfg.value,
        "query_before_ln": False,
        "regularization": cfg.regularization > 0,
        "residual_before": False,
        "temperature": False,
        "value_before_softmax": True,
        "value_initialized": True,
        "dropout_prob": cfg.dropout,
    }
    weights = {}
    priors = [v for k, v in art.tensors.items() if k.endswith(".prior")]
    if any(bool(p.abs().max() > 0) for p in priors):
        raise ConfigError(
            "fusion: a warm-started fusion's member priors have no AdapterHub equivalent; use format=native"
        )
    for key, value in art.tensors.items():  # sites.L{i}_{placement}.{query|key|value}.{param}
        if key.endswith(".prior"):
            continue
        _, site, proj, param = key.split(".")
        layer, placement = site[1:].split("_", 1)
        where = "attention.output" if placement == "attention" else "output"
        weights[f"{target.prefix}.encoder.layer.{layer}.{where}.adapter_fusion_layer.{fusion_name}.{proj}.{param}"] = (
            value
        )
    meta = {**hub_meta(fusion_name, target, art.hidden_size), "adapter_names": names, "config": raw}
    files["fusion/adapter_fusion_config.json"] = to_json(meta)
    files["fusion/model_adapter_fusion.safetensors"] = tensors_to_bytes(weights)
    if exportable_head(art.head, with_head, f"fusion {art.name!r}"):
        head = hub_head(fusion_name, art.head, art.head_tensors, art.labels, target, art.hidden_size)  # type: ignore[arg-type]
        files.update({f"fusion/{k}": v for k, v in head.items()})
    return files
