"""P-tuning v1 in PEFT 0.21's format (`P_TUNING`): the prompt encoder collapsed to `prompt_embeddings` [L, H],
prepended to the input embeddings like a soft prompt (PEFT loads it in inference mode without the encoder)."""

from __future__ import annotations

import json
from pathlib import Path

from composer.errors import ArtifactError, ConfigError
from composer.exporting import Target
from composer.prompts.artifacts import PromptArtifact, with_peft_head
from composer.prompts.export import peft_prompt_files
from composer.prompts.prompt import PromptConfig
from composer.safetensors_io import read_tensors

ENCODERS = {"MLP": "mlp", "LSTM": "lstm"}


def import_peft(directory: Path, base_dir: str | None) -> PromptArtifact:
    meta = json.loads((directory / "adapter_config.json").read_text())
    encoder = ENCODERS.get(str(meta.get("encoder_reparameterization_type", "MLP")).upper())
    if encoder is None:
        raise ConfigError(
            f"encoder_reparameterization_type must be MLP or LSTM, got {meta.get('encoder_reparameterization_type')!r}"
        )
    if int(meta.get("num_transformer_submodules") or 1) != 1:
        raise ConfigError("num_transformer_submodules: only encoders' prompts (1 submodule) import here")
    tensors = read_tensors(directory / "adapter_model.safetensors")
    prompt, hidden = tensors.get("prompt_embeddings"), int(meta["token_dim"])
    length = int(meta["num_virtual_tokens"])
    if prompt is None or tuple(prompt.shape) != (length, hidden):
        raise ArtifactError(
            f"prompt_embeddings: expected [{length}, {hidden}], got {None if prompt is None else tuple(prompt.shape)}"
        )
    cfg = PromptConfig(
        length=length,
        insertion="input_embeds",
        init="uniform",
        encoder=encoder,  # type: ignore[arg-type]
        encoder_hidden=int(meta.get("encoder_hidden_size") or hidden),
        collapsed=True,
    )
    art = PromptArtifact(name=directory.name, config=cfg, hidden_size=hidden, prompt=prompt)
    return with_peft_head(art, meta, tensors, base_dir)


def export_peft(art: PromptArtifact, target: Target, with_head: bool) -> dict[str, bytes]:
    if art.config.insertion != "input_embeds":
        raise ConfigError("format: PEFT's P-tuning prepends to the input embeddings")
    fields = {
        "encoder_reparameterization_type": {v: k for k, v in ENCODERS.items()}[art.config.encoder],
        "encoder_hidden_size": art.config.encoder_hidden,
        "encoder_num_layers": 2,
        "encoder_dropout": 0.0,
    }
    return peft_prompt_files(art, target, with_head, "P_TUNING", art.prompt, fields)
