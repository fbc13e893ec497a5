"""`AdaptedEncoder`: one frozen base, named adapters and heads, and the active composition."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from composer import routing
from composer.base import LoadedBase
from composer.bottleneck import BottleneckAdapter
from composer.composition import Composition, Fuse, Mixed, Single
from composer.config import BottleneckConfig
from composer.errors import ConfigError
from composer.fusion import Fusion, FusionConfig, check_fusable
from composer.heads import HeadConfig, PredictionHead
from composer.injection import inject


@dataclass
class EncoderOutput:
    hidden: torch.Tensor
    logits: torch.Tensor | None
    # per site key: fusion attention averaged over the valid tokens of each row, [B, N]
    fusion_attention: dict[str, torch.Tensor] | None = None


class AdaptedEncoder(nn.Module):
    def __init__(self, base: LoadedBase):
        super().__init__()
        self.base = base
        self.encoder = base.model
        self.router = inject(base.model, base.family)
        self.adapters = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self._capture: dict[str, torch.Tensor] = {}
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
        adapter.train(self.training)  # a module added to a model in eval mode must not run dropout
        self.adapters[name] = adapter
        return adapter

    def add_head(self, name: str, cfg: HeadConfig) -> PredictionHead:
        head = PredictionHead(cfg, self.base.hidden_size).to(self.device)
        head.train(self.training)
        self.heads[name] = head
        return head

    def add_fusion(self, name: str, members: list[str], cfg: FusionConfig | None = None) -> Fusion:
        if name in self.fusions:
            raise ConfigError(f"fusion {name!r} already exists")
        if len(set(members)) != len(members):
            raise ConfigError(f"a fusion lists each adapter once, got {members}")
        missing = [m for m in members if m not in self.adapters]
        if missing:
            raise ConfigError(f"unknown adapters {missing}")
        adapters = [self.adapters[m] for m in members]
        check_fusable(adapters)  # type: ignore[arg-type]
        fusion = Fusion(cfg or FusionConfig(), members, adapters[0]).to(self.device)  # type: ignore[arg-type]
        fusion.train(self.training)
        self.fusions[name] = fusion
        return fusion

    def activate(self, composition: Composition | None) -> None:
        """Point every site at a composition. Fusion snapshots its (frozen) adapters' weights here:
        activate again after changing them."""
        if composition is None:
            handler = None
        elif isinstance(composition, Single):
            if composition.adapter not in self.adapters:
                raise ConfigError(f"unknown adapter {composition.adapter!r}")
            handler = routing.single(self.adapters[composition.adapter])  # type: ignore[arg-type]
        elif isinstance(composition, Fuse):
            if composition.fusion not in self.fusions:
                raise ConfigError(f"unknown fusion {composition.fusion!r}")
            fusion: Fusion = self.fusions[composition.fusion]  # type: ignore[assignment]
            handler = routing.fuse(fusion, [self.adapters[m] for m in fusion.members], self._capture)  # type: ignore[misc]
        elif isinstance(composition, Mixed):
            missing = sorted({a for a in composition.adapters if a is not None and a not in self.adapters})
            if missing:
                raise ConfigError(f"unknown adapters {missing}")
            handler = routing.mixed([self.adapters[a] if a is not None else None for a in composition.adapters])  # type: ignore[misc]
        else:
            raise ConfigError(f"unsupported composition {composition!r}")
        self.active = composition
        self.router.handler = handler

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
        return_fusion_attention: bool = False,
    ) -> EncoderOutput:
        self._capture.clear()
        if return_fusion_attention:
            self._capture["on"] = attention_mask
        try:
            hidden = self.encode(input_ids, attention_mask, token_type_ids)
        finally:
            captured = {k: v for k, v in self._capture.items() if k != "on"}
            self._capture.clear()
        logits = self.heads[head](hidden, attention_mask) if head is not None else None
        attention = None
        if return_fusion_attention:
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
            attention = {k: (p * mask).sum(1) / mask.sum(1).clamp(min=1) for k, p in captured.items()}
        return EncoderOutput(hidden=hidden, logits=logits, fusion_attention=attention)

    def train(self, mode: bool = True) -> AdaptedEncoder:
        super().train(mode)
        if mode and not self.base_dropout:
            self.encoder.eval()
        return self
