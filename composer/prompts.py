"""Soft prompts (prompt tuning, Lester et al. 2021): L trainable vectors prepended to the input.

Two insertion points, both in use by reference implementations:
- `input_embeds` (PEFT, and Lester et al.): the prompt replaces a prefix of the word
  embeddings; position and token-type embeddings and the embedding LayerNorm then apply
  to the whole sequence (token type 0 for the prompt);
- `embedding_output` (AdapterHub `adapters`): the prompt is prepended to the output of the
  embedding layer, after its LayerNorm.

Every row of a batch may carry its own prompt ([B, L, H]), which is how K prompts run as
one forward of B×K rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from composer.base import LoadedBase
from composer.errors import ConfigError

Insertion = Literal["input_embeds", "embedding_output"]


@dataclass(frozen=True)
class PromptConfig:
    length: int = 20
    insertion: Insertion = "input_embeds"
    init: Literal["vocab", "text", "labels", "uniform"] = "vocab"
    init_text: str | None = None
    uniform_scale: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.length <= 256:
            raise ConfigError(f"prompt length must be in [1, 256], got {self.length}")
        if self.insertion not in ("input_embeds", "embedding_output"):
            raise ConfigError(f"unknown insertion {self.insertion!r}")
        if self.init not in ("vocab", "text", "labels", "uniform"):
            raise ConfigError(f"unknown prompt init {self.init!r}")
        if self.init == "text" and not self.init_text:
            raise ConfigError("init='text' needs init_text")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptConfig:
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown prompt config fields: {unknown}")
        return cls(**d)


class SoftPrompt(nn.Module):
    def __init__(self, cfg: PromptConfig, hidden_size: int):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Parameter(torch.zeros(cfg.length, hidden_size))

    def initialise(self, base: LoadedBase, labels: tuple[str, ...] = (), seed: int = 0) -> None:
        """From random vocabulary tokens, a text, the class-label words, or uniform noise."""
        gen = torch.Generator().manual_seed(seed)
        words = base.model.get_input_embeddings()
        n = self.cfg.length
        with torch.no_grad():
            if self.cfg.init == "uniform":
                self.embedding.uniform_(-self.cfg.uniform_scale, self.cfg.uniform_scale, generator=gen)
                return
            if self.cfg.init == "vocab":
                # BERT's ids 1000-5000 are frequent word pieces; tiny test vocabularies use what they have
                lo, hi = (
                    (1000, 5000)
                    if words.num_embeddings > 5000
                    else (min(5, words.num_embeddings - 1), words.num_embeddings)
                )
                ids = torch.randint(lo, hi, (n,), generator=gen)
            else:
                text = self.cfg.init_text if self.cfg.init == "text" else " ".join(labels)
                if not text:
                    raise ConfigError("label-word init needs a task with labels")
                tokens = base.tokenizer(text, add_special_tokens=False)["input_ids"]
                ids = torch.tensor((tokens * (n // max(1, len(tokens)) + 1))[:n])
            self.embedding.copy_(words(ids.to(words.weight.device)).to(self.embedding.dtype))


def encode_prompted(
    base: LoadedBase,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    prompts: torch.Tensor,
    insertion: Insertion,
) -> torch.Tensor:
    """Hidden states [B, L+T, H] with a per-row prompt [B, L, H] in front of each row."""
    model = base.model
    b, length = prompts.shape[0], prompts.shape[1]
    mask = torch.cat([attention_mask.new_ones(b, length), attention_mask], dim=1)
    kwargs: dict[str, Any] = {"attention_mask": mask}
    has_types = base.family != "distilbert"
    if insertion == "input_embeds":
        words = model.get_input_embeddings()(input_ids)
        kwargs["inputs_embeds"] = torch.cat([prompts.to(words.dtype), words], dim=1)
        if has_types:
            tt = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            kwargs["token_type_ids"] = torch.cat([tt.new_zeros(b, length), tt], dim=1)
        return model(**kwargs).last_hidden_state

    def prepend(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
        return torch.cat([prompts.to(out.dtype), out], dim=1)

    handle = model.embeddings.register_forward_hook(prepend)
    try:
        kwargs["input_ids"] = input_ids
        if has_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return model(**kwargs).last_hidden_state
    finally:
        handle.remove()


def pool_prompted(hidden: torch.Tensor, attention_mask: torch.Tensor, length: int, pooling: str) -> torch.Tensor:
    """Pooled vector per row. `first_token` is position 0 of the prompted sequence (PEFT's classifier
    input); `cls` and `mean` look at the real tokens only."""
    if pooling == "first_token":
        return hidden[:, 0]
    real = hidden[:, length:]
    if pooling == "cls":
        return real[:, 0]
    m = attention_mask.unsqueeze(-1).to(real.dtype)
    return (real * m).sum(1) / m.sum(1).clamp(min=1.0)
