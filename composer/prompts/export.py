"""Export the prompt family in PEFT 0.21's layout: one flat `prompt_embeddings` tensor and an
`adapter_config.json` (the inverse of the importers). A head goes into `modules_to_save` as the classifier
plus the pooler (our dense + tanh on position 0: the first virtual token of a shallow prompt, the [CLS]
token under a prefix, both as in PEFT).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from composer.errors import ConfigError
from composer.exporting import Target, peft_head
from composer.prompts.artifacts import PromptArtifact
from composer.safetensors_io import tensors_to_bytes


def peft_prompt_files(
    art: PromptArtifact,
    target: Target,
    with_head: bool,
    peft_type: str,
    prompt_embeddings: torch.Tensor,
    fields: dict[str, Any],
) -> dict[str, bytes]:
    modules_to_save, weights = peft_head(art.head, art.head_tensors, with_head, f"prompt {art.name!r}", "base_model.")
    weights = {k.replace("{prefix}", target.prefix): v for k, v in weights.items()}
    weights["prompt_embeddings"] = prompt_embeddings
    config = {
        "peft_type": peft_type,
        "task_type": "SEQ_CLS" if modules_to_save else "FEATURE_EXTRACTION",
        "num_virtual_tokens": art.config.length,
        "token_dim": art.hidden_size,
        "num_transformer_submodules": 1,
        "num_attention_heads": target.num_heads,
        "num_layers": target.num_layers,
        "modules_to_save": modules_to_save,
        "inference_mode": True,
        "base_model_name_or_path": target.name,
        "revision": None,
        **fields,
    }
    return {
        "adapter_config.json": json.dumps(config, indent=2, sort_keys=True).encode(),
        "adapter_model.safetensors": tensors_to_bytes(weights),
    }


def prompt_to_peft(art: PromptArtifact, target: Target, with_head: bool = True) -> dict[str, bytes]:
    """PROMPT_TUNING: PEFT prepends the virtual tokens to the input embeddings, so only shallow
    `input_embeds` prompts export."""
    if art.config.kind != "shallow" or art.config.insertion != "input_embeds":
        raise ConfigError(
            "format: PEFT prompt tuning prepends to the input embeddings; this prompt is "
            f"{art.config.kind} with insertion {art.config.insertion!r}"
        )
    return peft_prompt_files(art, target, with_head, "PROMPT_TUNING", art.prompt, {"prompt_tuning_init": "RANDOM"})
