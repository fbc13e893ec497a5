"""`AdaptedEncoder`: one frozen base, named adapters and heads, and the active composition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from composer.base import LoadedBase
from composer.bottleneck import BottleneckAdapter
from composer.composition import Composition, Single
from composer.config import BottleneckConfig, Placement
from composer.errors import ConfigError
from composer.heads import HeadConfig, PredictionHead
from composer.injection import inject


@dataclass
class EncoderOutput:
    hidden: torch.Tensor
    logits: torch.Tensor | None


class AdaptedEncoder(nn.Module):
    def __init__(self, base: LoadedBase):
        super().__init__()
        self.base = base
        self.encoder = base.model
        self.router = inject(base.model, base.family)
        self.adapters = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.active: Composition | None = None
        # The frozen base runs without dropout by default (see docs/architecture.md, "Frozen base").
        self.base_dropout = False
        self._accepts_token_types = base.family != "distilbert"

    @property
    def device(self) -> torch.device:
        return self.base.device

    # -- building -------------------------------------------------------------------------
    def add_adapter(self, name: str, cfg: BottleneckConfig) -> BottleneckAdapter:
        if name in self.adapters:
            raise ConfigError(f"adapter {name!r} already exists")
        adapter = BottleneckAdapter(cfg, self.base.hidden_size, self.base.num_layers).to(self.device)
        self.adapters[name] = adapter
        return adapter

    def add_head(self, name: str, cfg: HeadConfig) -> PredictionHead:
        head = PredictionHead(cfg, self.base.hidden_size).to(self.device)
        self.heads[name] = head
        return head

    def activate(self, composition: Composition | None) -> None:
        if isinstance(composition, Single) and composition.adapter not in self.adapters:
            raise ConfigError(f"unknown adapter {composition.adapter!r}")
        self.active = composition
        self.router.handler = None if composition is None else self._single_handler(composition)

    def _single_handler(self, comp: Single) -> Callable:
        adapter = self.adapters[comp.adapter]

        def handle(layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: Callable) -> torch.Tensor:
            site = adapter.site(layer, placement)
            return ln(x + r) if site is None else site(x, r, ln)

        return handle

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("encoder.")]

    # -- running --------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._accepts_token_types:
            kwargs["token_type_ids"] = token_type_ids
        return self.encoder(**kwargs).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        head: str | None = None,
    ) -> EncoderOutput:
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        logits = self.heads[head](hidden, attention_mask) if head is not None else None
        return EncoderOutput(hidden=hidden, logits=logits)

    def train(self, mode: bool = True) -> AdaptedEncoder:
        super().train(mode)
        if mode and not self.base_dropout:
            self.encoder.eval()
        return self
