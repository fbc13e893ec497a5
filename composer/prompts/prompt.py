"""Soft prompts (prompt tuning, Lester et al. 2021): L trainable vectors prepended to the input.

Two insertion points, both in use by reference implementations:
- `input_embeds` (PEFT, and Lester et al.): the prompt replaces a prefix of the word
  embeddings; position and token-type embeddings and the embedding LayerNorm then apply
  to the whole sequence (token type 0 for the prompt);
- `embedding_output` (AdapterHub `adapters`): the prompt is prepended to the output of the
  embedding layer, after its LayerNorm.

Deep prompts (prefix tuning, Li & Liang 2021; P-tuning v2 when trained flat) put L prefix keys and
values in front of every layer's self-attention instead ([layers, 2, L, H]); they go in through the
model's key/value cache. PEFT's prefix tuning lets the real tokens' positions start after the
prefix (`positions="after_prefix"`); AdapterHub's adds them inside the attention, so positions
start at 0 (`"from_zero"`). During training they may be reparameterised through an MLP
(`reparam_hidden`, PEFT's `prefix_projection`), collapsed to plain tensors on save.

A shallow prompt may train through a prompt encoder (P-tuning v1, Liu et al. 2021: `encoder`
"mlp" or "lstm", as PEFT's PromptEncoder), likewise collapsed to its virtual-token embeddings.

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
from composer.injection import FAMILIES, Scope, inject
from composer.prompts.encoders import PromptEncoder, PromptReparam

Insertion = Literal["input_embeds", "embedding_output"]
Positions = Literal["after_prefix", "from_zero"]


@dataclass(frozen=True)
class PromptConfig:
    length: int = 20
    kind: Literal["shallow", "deep"] = "shallow"
    insertion: Insertion = "input_embeds"  # shallow prompts only
    reparam_hidden: int = 0  # deep prompts: >0 trains through an MLP of this width (collapsed on save)
    init: Literal["vocab", "text", "labels", "uniform"] = "vocab"
    init_text: str | None = None
    uniform_scale: float = 0.5
    encoder: Literal["none", "mlp", "lstm"] = "none"  # shallow prompts: P-tuning v1's prompt encoder
    encoder_hidden: int = 0  # its width (PEFT's encoder_hidden_size)
    positions: Positions = "after_prefix"  # deep prompts: where the real tokens' positions start
    collapsed: bool = False  # the encoder or MLP was folded into plain tensors (a saved artifact)

    @property
    def registry_kind(self) -> str:
        """The kind this prompt registers as: prefix (deep), p_tuning (through a prompt encoder), soft_prompt."""
        if self.kind == "deep":
            return "prefix"
        return "p_tuning" if self.encoder != "none" else "soft_prompt"

    @property
    def positions_taken(self) -> int:
        """Positions the prompt takes from the input's: a shallow prompt's, and PEFT's prefix's."""
        return self.length if self.kind == "shallow" or self.positions == "after_prefix" else 0

    @property
    def reparameterised(self) -> bool:
        return bool(self.reparam_hidden or self.encoder != "none")

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
        if self.encoder not in ("none", "mlp", "lstm"):
            raise ConfigError(f"encoder must be 'none', 'mlp' or 'lstm' (P-tuning), got {self.encoder!r}")
        if self.encoder != "none" and (self.kind != "shallow" or self.encoder_hidden < 1):
            raise ConfigError("encoder: a prompt encoder (P-tuning) needs a shallow prompt and encoder_hidden >= 1")
        if self.encoder == "none" and self.encoder_hidden:
            raise ConfigError("encoder_hidden applies to a prompt encoder only (encoder 'mlp' or 'lstm')")
        if self.positions not in ("after_prefix", "from_zero") or (
            self.positions != "after_prefix" and self.kind != "deep"
        ):
            raise ConfigError("positions: 'after_prefix' or 'from_zero', and only deep prompts start from zero")

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
        self.reparam: PromptReparam | None = None
        self.encoder: PromptEncoder | None = None
        live = not cfg.collapsed  # a saved prompt holds plain tensors: no encoder or MLP to build
        if cfg.kind == "deep":
            if num_layers < 1:
                raise ConfigError("deep prompts need the number of layers")
            if cfg.reparam_hidden and live:
                self.reparam = PromptReparam(hidden_size, cfg.reparam_hidden, num_layers)
            else:
                self.deep = nn.Parameter(torch.zeros(num_layers, 2, cfg.length, hidden_size))
        elif cfg.encoder != "none" and live:
            self.encoder = PromptEncoder(cfg.encoder, hidden_size, cfg.encoder_hidden)

    def value(self) -> torch.Tensor:
        """[L, H] for shallow prompts, [layers, 2, L, H] for deep ones (through the encoder or MLP if any)."""
        if self.cfg.kind == "shallow":
            return self.encoder(self.embedding) if self.encoder is not None else self.embedding
        if self.reparam is not None:
            return self.reparam(self.embedding)
        return self.deep  # type: ignore[return-value]

    def collapsed(self) -> tuple[PromptConfig, torch.Tensor]:
        """The config and plain tensor a saved artifact holds: the encoder or MLP folded into its output."""
        cfg = dataclasses.replace(self.cfg, collapsed=True) if self.cfg.reparameterised else self.cfg
        with torch.no_grad():
            return cfg, self.value().detach().cpu().clone()

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
    positions: Positions = "after_prefix",
) -> torch.Tensor:
    """Hidden states [B, L+T, H] with a per-row shallow prompt [B, L, H] in front of each row; or [B, T, H]
    with per-row deep prompts [B, layers, 2, L, H] as each layer's prefix keys and values."""
    model = base.model
    router = inject(model, base.family)
    if prompts.dim() == 5:
        with router.scoped(None):  # the bare base: whatever else runs on these layers is not in this forward
            return _encode_deep(base, input_ids, attention_mask, token_type_ids, prompts, positions)
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
    positions: Positions,
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
    if positions == "from_zero":  # the prefix sits inside the attention only, not in the positions
        first = cfg.pad_token_id + 1 if FAMILIES[base.family].positions_after_padding else 0  # RoBERTa's offset
        kwargs["position_ids"] = first + torch.arange(input_ids.shape[1], device=input_ids.device).expand(b, -1)
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
