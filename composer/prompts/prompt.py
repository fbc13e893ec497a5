"""Soft prompts (prompt tuning, Lester et al. 2021): L trainable vectors prepended to the input.

Two insertion points, both in use by reference implementations:
- `input_embeds` (PEFT, and Lester et al.): the prompt replaces a prefix of the word
  embeddings; position and token-type embeddings and the embedding LayerNorm then apply
  to the whole sequence (token type 0 for the prompt);
- `embedding_output` (AdapterHub `adapters`): the prompt is prepended to the output of the
  embedding layer, after its LayerNorm.

Deep prompts (P-tuning v2) put L prefix keys and values in front of every layer's
self-attention instead ([layers, 2, L, H]); they go in through the model's key/value cache,
so the real tokens' positions start after the prefix, as in HF's prefix tuning. During
training they may be reparameterised through an MLP, collapsed to plain tensors on save.

Every row of a batch may carry its own prompt, which is how K prompts run as one forward
of B×K rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from composer.base import LoadedBase
from composer.errors import ConfigError
from composer.injection import Scope, inject

Insertion = Literal["input_embeds", "embedding_output"]


@dataclass(frozen=True)
class PromptConfig:
    length: int = 20
    kind: Literal["shallow", "deep"] = "shallow"
    insertion: Insertion = "input_embeds"  # shallow prompts only
    reparam_hidden: int = 0  # deep prompts: >0 trains through an MLP of this width (collapsed on save)
    init: Literal["vocab", "text", "labels", "uniform"] = "vocab"
    init_text: str | None = None
    uniform_scale: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.length <= 256:
            raise ConfigError(f"prompt length must be in [1, 256], got {self.length}")
        if self.kind not in ("shallow", "deep"):
            raise ConfigError(f"prompt kind must be shallow or deep, got {self.kind!r}")
        if self.reparam_hidden < 0 or (self.reparam_hidden and self.kind != "deep"):
            raise ConfigError("reparam_hidden applies to deep prompts only, and must be >= 0")
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
    def __init__(self, cfg: PromptConfig, hidden_size: int, num_layers: int = 0):
        super().__init__()
        self.cfg = cfg
        self.num_layers = num_layers
        self.embedding = nn.Parameter(torch.zeros(cfg.length, hidden_size))
        self.deep: nn.Parameter | None = None
        self.reparam: nn.Sequential | None = None
        if cfg.kind == "deep":
            if num_layers < 1:
                raise ConfigError("deep prompts need the number of layers")
            if cfg.reparam_hidden:
                out = num_layers * 2 * hidden_size
                self.reparam = nn.Sequential(
                    nn.Linear(hidden_size, cfg.reparam_hidden), nn.Tanh(), nn.Linear(cfg.reparam_hidden, out)
                )
            else:
                self.deep = nn.Parameter(torch.zeros(num_layers, 2, cfg.length, hidden_size))

    def value(self) -> torch.Tensor:
        """[L, H] for shallow prompts, [layers, 2, L, H] for deep ones (through the MLP if reparameterised)."""
        if self.cfg.kind == "shallow":
            return self.embedding
        if self.reparam is not None:
            flat = self.reparam(self.embedding)  # [L, layers*2*H]
            return flat.view(self.cfg.length, self.num_layers, 2, -1).permute(1, 2, 0, 3)
        return self.deep  # type: ignore[return-value]

    def initialise(self, base: LoadedBase, labels: tuple[str, ...] = (), seed: int = 0) -> None:
        """From random vocabulary tokens, a text, the class-label words, or uniform noise."""
        gen = torch.Generator().manual_seed(seed)
        if self.deep is not None:
            with torch.no_grad():
                self.deep.normal_(0.0, 0.02, generator=gen)
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
    """Hidden states [B, L+T, H] with a per-row shallow prompt [B, L, H] in front of each row; or [B, T, H]
    with per-row deep prompts [B, layers, 2, L, H] as each layer's prefix keys and values."""
    model = base.model
    router = inject(model, base.family)
    if prompts.dim() == 5:
        with router.scoped(None):  # the bare base: whatever else runs on these layers is not in this forward
            return _encode_deep(base, input_ids, attention_mask, token_type_ids, prompts)
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
        with router.scoped(None):
            return model(**kwargs).last_hidden_state
    kwargs["input_ids"] = input_ids
    if has_types and token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    with router.scoped(Scope(prefix=prompts)):  # prepended to the embedding output, for this forward only
        return model(**kwargs).last_hidden_state


def _encode_deep(
    base: LoadedBase,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
    prefixes: torch.Tensor,
) -> torch.Tensor:
    from transformers import DynamicCache

    if base.family not in ("bert", "roberta", "xlm-roberta", "electra"):
        raise ConfigError(f"deep prompts need a key/value cache, which {base.family} does not have")
    cfg = base.model.config
    b, layers, _, length, hidden = prefixes.shape
    heads = cfg.num_attention_heads
    cache = DynamicCache()
    for i in range(layers):
        kv = prefixes[:, i].reshape(b, 2, length, heads, hidden // heads).transpose(2, 3)  # [B, 2, heads, L, d]
        cache.update(kv[:, 0], kv[:, 1], i)
    mask = torch.cat([attention_mask.new_ones(b, length), attention_mask], dim=1)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "cache": cache}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    return base.model(**kwargs).last_hidden_state


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
