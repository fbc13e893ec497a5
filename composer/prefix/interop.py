"""Prefix tuning in the references' formats.

Both store the prefixes flat, [L, layers·2·H], layer-major then key/value (`past_key_values`' layout);
ours is the same numbers as [layers, 2, L, H].
- PEFT 0.21 `PREFIX_TUNING`: `prompt_embeddings`, the projection MLP already applied at save. The real
  tokens' positions start after the prefix (it goes in as the key/value cache).
- AdapterHub 1.3 `prefix_tuning`: the pool's `wte` + `control_trans` MLP (or the flat `control_trans`),
  collapsed here; the prefix is added inside the attention, so positions start at 0. adapters 1.3 saves
  it only as `pytorch_adapter.bin` (its tensors are shared across layers), read with weights_only=True.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from composer.errors import ArtifactError, ConfigError
from composer.exporting import CONVERT_HINT, Target, hub_files, read_hub_head
from composer.heads import activation
from composer.prompts.artifacts import PromptArtifact, with_peft_head
from composer.prompts.export import peft_prompt_files
from composer.prompts.prompt import PromptConfig
from composer.safetensors_io import read_tensors, read_weights_only

# AdapterHub's name for the encoder's self-attention prefix, under which its pool keeps the module
HUB_LOCATION = "self_prefix"


def to_layers(flat: torch.Tensor, layers: int, hidden: int, what: str) -> torch.Tensor:
    """[L, layers·2·H] -> [layers, 2, L, H]."""
    if flat.dim() != 2 or flat.shape[1] != layers * 2 * hidden:
        raise ArtifactError(
            f"{what}: prefix of shape {tuple(flat.shape)} does not fit {layers} layers of hidden size {hidden} "
            f"(expected [L, {layers * 2 * hidden}])"
        )
    return flat.reshape(flat.shape[0], layers, 2, hidden).permute(1, 2, 0, 3).contiguous()


def to_flat(prompt: torch.Tensor) -> torch.Tensor:
    """[layers, 2, L, H] -> [L, layers·2·H]."""
    return prompt.permute(2, 0, 1, 3).reshape(prompt.shape[2], -1).contiguous()


def import_peft(directory: Path, base_dir: str | None) -> PromptArtifact:
    meta = json.loads((directory / "adapter_config.json").read_text())
    if int(meta.get("num_transformer_submodules") or 1) != 1:
        raise ConfigError("num_transformer_submodules: only encoders' prefixes (1 submodule) import here")
    tensors = read_tensors(directory / "adapter_model.safetensors")
    if "prompt_embeddings" not in tensors:
        raise ArtifactError("adapter_model.safetensors: a PEFT prefix has no prompt_embeddings")
    hidden, layers = int(meta["token_dim"]), int(meta["num_layers"])
    prompt = to_layers(tensors["prompt_embeddings"], layers, hidden, "prompt_embeddings")
    projected = bool(meta.get("prefix_projection"))
    cfg = PromptConfig(
        length=int(meta["num_virtual_tokens"]),
        kind="deep",
        reparam_hidden=int(meta.get("encoder_hidden_size") or hidden) if projected else 0,
        init="uniform",
        collapsed=projected,
    )
    art = PromptArtifact(name=directory.name, config=cfg, hidden_size=hidden, prompt=prompt)
    return with_peft_head(art, meta, tensors, base_dir)


def export_peft(art: PromptArtifact, target: Target, with_head: bool) -> dict[str, bytes]:
    if art.config.positions != "after_prefix":
        raise ConfigError(
            "format: PEFT starts the real tokens' positions after the prefix; this prefix was trained with "
            "positions from zero (AdapterHub's way), so it downloads as adapterhub"
        )
    fields = {
        "prefix_projection": bool(art.config.reparam_hidden),
        "encoder_hidden_size": art.config.reparam_hidden or art.hidden_size,
    }
    return peft_prompt_files(art, target, with_head, "PREFIX_TUNING", to_flat(art.prompt), fields)


def _hub_tensors(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / "adapter.safetensors").is_file():
        return read_tensors(directory / "adapter.safetensors")
    if (directory / "pytorch_adapter.bin").is_file():
        return read_weights_only((directory / "pytorch_adapter.bin").read_bytes(), "pytorch_adapter.bin", CONVERT_HINT)
    raise ArtifactError("an AdapterHub prefix needs adapter.safetensors or pytorch_adapter.bin")


def _collapse(raw: dict[str, Any], module: dict[str, torch.Tensor], length: int) -> torch.Tensor:
    """The pool module's prefixes, [L, layers·2·H]: AdapterHub's `eject`, without dropout."""
    if not raw.get("flat"):
        mlp = torch.nn.Sequential(
            torch.nn.Linear(*module["control_trans.0.weight"].shape[::-1]),
            activation(str(raw.get("non_linearity", "tanh")).lower()),
            torch.nn.Linear(*module["control_trans.2.weight"].shape[::-1]),
        )
        try:
            mlp.load_state_dict({k[len("control_trans.") :]: v for k, v in module.items() if k != "wte.weight"})
        except RuntimeError as e:
            raise ArtifactError(f"the AdapterHub prefix's MLP does not fit its config: {e}") from None
        with torch.no_grad():
            return mlp(module["wte.weight"][:length])
    return module["control_trans"].reshape(length, -1)


def import_adapterhub(directory: Path) -> PromptArtifact:
    meta = json.loads((directory / "adapter_config.json").read_text())
    raw, name = meta.get("config") or {}, str(meta.get("name", directory.name))
    if raw.get("use_gating"):
        raise ConfigError("use_gating: gated prefixes (UniPELT) are not supported")
    if raw.get("leave_out"):
        raise ConfigError("leave_out: a prefix on some layers only is not supported")
    pool = f"prefix_tunings.{name}.{HUB_LOCATION}."
    module = {k.split(pool, 1)[1]: v for k, v in _hub_tensors(directory).items() if pool in k}
    if not module:
        raise ArtifactError(f"no {HUB_LOCATION} prefix of {name!r} in the AdapterHub weights")
    hidden, length = int(meta["hidden_size"]), int(raw.get("prefix_length", 30))
    flat = _collapse(raw, module, length)
    layers = flat.shape[1] // (2 * hidden) if flat.dim() == 2 else 0
    cfg = PromptConfig(
        length=length,
        kind="deep",
        reparam_hidden=0 if raw.get("flat") else int(raw.get("bottleneck_size", 512)),
        init="uniform",
        positions="from_zero",
        collapsed=not raw.get("flat"),
    )
    art = PromptArtifact(name=name, config=cfg, hidden_size=hidden, prompt=to_layers(flat, layers, hidden, name))
    head, labels, tensors = read_hub_head(directory, weights_only_pickle=True)
    if head is not None:
        art.head, art.labels = head, labels
        art.head_tensors = {k[len("head.") :]: v for k, v in tensors.items()}
    return art


def export_adapterhub(art: PromptArtifact, target: Target, with_head: bool) -> dict[str, bytes]:
    """A flat PrefixTuningConfig (the collapsed prefixes as `control_trans`), as safetensors: adapters 1.3
    loads it with `load_adapter(..., use_safetensors=True)`."""
    if art.config.positions != "from_zero":
        raise ConfigError(
            "format: AdapterHub adds the prefix inside the attention, so its positions start at zero; this "
            "prefix was trained with positions after the prefix (PEFT's way), so it downloads as peft"
        )
    config = {
        "architecture": "prefix_tuning",
        "encoder_prefix": True,
        "cross_prefix": True,
        "leave_out": [],
        "flat": True,
        "prefix_length": art.config.length,
        "bottleneck_size": 512,
        "non_linearity": "tanh",
        "dropout": 0.0,
        "use_gating": False,
        "shared_gating": True,
        "init_weights_seed": None,
    }
    key = f"{target.prefix}.prefix_tuning.prefix_tunings.{art.name}.{HUB_LOCATION}.control_trans"
    return hub_files(art, target, config, {key: to_flat(art.prompt).reshape(-1)}, art.head_tensors, with_head)
