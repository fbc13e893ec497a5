"""A bottleneck adapter in AdapterHub `adapters` 1.3.0's layout (`save_adapter`): the inverse of `hub.py`.
What the layout cannot represent is refused (ConfigError); see composer/exporting.py for heads."""

from __future__ import annotations

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_artifact import split_tensors as _split
from composer.bottleneck.hub import BN_FIELDS
from composer.bottleneck.modules import BottleneckConfig
from composer.exporting import Target, exportable_head, hub_head, hub_meta, to_json
from composer.safetensors_io import tensors_to_bytes


def bottleneck_to_hub(
    art: AdapterArtifact, target: Target, name: str | None = None, with_head: bool = True
) -> dict[str, bytes]:
    cfg: BottleneckConfig = art.config  # type: ignore[assignment]
    name = name or art.name
    raw = {f: getattr(cfg, f) for f in BN_FIELDS} | {"leave_out": list(cfg.leave_out)}  # bottleneck: no "architecture"
    down = 1 if cfg.ln_before else 0
    table = {
        "down": f"adapter_down.{down}",
        "up": "adapter_up",
        "norm_before": "adapter_down.0",
        "norm_after": "adapter_norm_after",
    }
    module, head = _split(art)
    weights = {}
    for key, value in module.items():  # sites.L{i}_{placement}.{param}
        _, site, *param = key.split(".")
        layer, placement = site[1:].split("_", 1)
        where = "attention.output" if placement == "attention" else "output"
        local = "scaling" if param == ["scaling"] else f"{table[param[0]]}.{param[1]}"
        weights[f"{target.prefix}.encoder.layer.{layer}.{where}.adapters.{name}.{local}"] = value
    files = {
        "adapter_config.json": to_json({**hub_meta(name, target, art.hidden_size), "config": raw}),
        "adapter.safetensors": tensors_to_bytes(weights),
    }
    if exportable_head(art.head, with_head, f"adapter {art.name!r}"):
        files.update(hub_head(name, art.head, head, art.labels, target, art.hidden_size))  # type: ignore[arg-type]
    return files
