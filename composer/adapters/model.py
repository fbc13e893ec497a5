"""`AdaptedEncoder`: one frozen base with named adapters, fusions and heads.

The composition a forward runs (`Single`, `Fuse`, `Mixed`, or None for the bare base) is an
argument of that forward. It lives in a scope that the forward sets and always resets, so
nothing one request runs stays on the shared layers for the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from composer.adapters import lora, routing
from composer.adapters.bottleneck import BottleneckAdapter
from composer.adapters.config import AdapterConfig, BottleneckConfig
from composer.adapters.fusion import Fusion, FusionConfig, check_fusable
from composer.adapters.lora import LoraAdapter
from composer.adapters.routing import FusePlan
from composer.base import LoadedBase
from composer.composition import Composition, Fuse, Single
from composer.errors import ConfigError
from composer.heads import HeadConfig, PredictionHead
from composer.injection import Scope, inject


@dataclass
class EncoderOutput:
    hidden: torch.Tensor
    logits: torch.Tensor | None
    # per site key: fusion attention averaged over the valid tokens of each row, [B, N]
    fusion_attention: dict[str, torch.Tensor] | None = None


def _built(build, weights: dict[str, torch.Tensor] | None):  # type: ignore[no-untyped-def]
    """`build()`, initialised; or, with weights, built on the meta device and given the weights (strict)."""
    if weights is None:
        return build()
    with torch.device("meta"):
        module = build()
    module.load_state_dict(weights, strict=True, assign=True)
    return module


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """The module on `device`; one already there is left as it is (no call per tensor)."""
    if all(t.device == device for t in (*module.parameters(), *module.buffers())):
        return module
    return module.to(device)


class AdaptedEncoder(nn.Module):
    def __init__(self, base: LoadedBase):
        super().__init__()
        self.base = base
        self.encoder = base.model
        self.router = inject(base.model, base.family)
        self.adapters = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self._plans: dict[str, FusePlan] = {}  # per loaded fusion: its members stacked, built on first use
        # The frozen base runs without dropout by default (see docs/architecture.md, "Frozen base").
        self.base_dropout = False
        self._accepts_token_types = base.family != "distilbert"

    @property
    def device(self) -> torch.device:
        return self.base.device

    # -- building -------------------------------------------------------------------------
    def build_adapter(
        self, cfg: AdapterConfig, weights: dict[str, torch.Tensor] | None = None
    ) -> BottleneckAdapter | LoraAdapter:
        """A bottleneck adapter or a LoRA for this model, by its config, not attached: freshly initialised, or
        with `weights` (loaded strictly; built without initialising, which loading would overwrite anyway)."""

        def build() -> BottleneckAdapter | LoraAdapter:
            if isinstance(cfg, BottleneckConfig):
                return BottleneckAdapter(cfg, self.base.hidden_size, self.base.num_layers)
            return LoraAdapter.for_encoder(cfg, self.encoder, self.base.family, self.base.num_layers)

        # a module added to a model in eval mode must not run dropout
        return on_device(_built(build, weights), self.device).train(self.training)  # type: ignore[return-value]

    def build_head(self, cfg: HeadConfig, weights: dict[str, torch.Tensor] | None = None) -> PredictionHead:
        head = on_device(_built(lambda: PredictionHead(cfg, self.base.hidden_size), weights), self.device)
        return head.train(self.training)  # type: ignore[return-value]

    def add_adapter(
        self, name: str, cfg: AdapterConfig, weights: dict[str, torch.Tensor] | None = None
    ) -> BottleneckAdapter | LoraAdapter:
        if name in self.adapters:
            raise ConfigError(f"adapter {name!r} already exists")
        adapter = self.adapters[name] = self.build_adapter(cfg, weights)
        return adapter

    def add_head(self, name: str, cfg: HeadConfig, weights: dict[str, torch.Tensor] | None = None) -> PredictionHead:
        head = self.heads[name] = self.build_head(cfg, weights)
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
        loras = [m for m, a in zip(members, adapters, strict=True) if isinstance(a, LoraAdapter)]
        if loras:
            raise ConfigError(f"LoRA adapters cannot be fused (AdapterFusion fuses bottleneck adapters): {loras}")
        check_fusable(adapters)  # type: ignore[arg-type]
        fusion = Fusion(cfg or FusionConfig(), members, adapters[0]).to(self.device)  # type: ignore[arg-type]
        fusion.train(self.training)
        self.fusions[name] = fusion
        return fusion

    def put(self, name: str, adapter: nn.Module, head: nn.Module | None = None) -> None:
        """Attach modules built before (a reload from the host tier): moved to the device if they are not on it."""
        if name in self.adapters:
            raise ConfigError(f"adapter {name!r} already exists")
        self.adapters[name] = on_device(adapter, self.device).train(self.training)
        if head is not None:
            self.heads[name] = on_device(head, self.device).train(self.training)

    def remove(self, name: str) -> None:
        """Drop an adapter, fusion or head of this name (and a fusion's stacked plan)."""
        for registry in (self.adapters, self.heads, self.fusions):
            if name in registry:
                del registry[name]
        self._plans.pop(name, None)

    def fusion_plan(self, name: str) -> FusePlan:
        """The stacked members of a fusion, kept until the fusion is removed."""
        if name not in self.fusions:
            raise ConfigError(f"unknown fusion {name!r}")
        plan = self._plans.get(name)
        if plan is None:
            fusion: Fusion = self.fusions[name]  # type: ignore[assignment]
            plan = self._plans[name] = FusePlan(fusion, [self.adapters[m] for m in fusion.members])  # type: ignore[misc]
        return plan

    def scope(self, composition: Composition | None, capture: dict[str, torch.Tensor] | None = None) -> Scope:
        """What one forward under `composition` asks of the shared layers (None: the bare base): site
        handlers for bottleneck adapters and fusions, linear handlers for LoRAs."""
        if composition is None:
            return Scope()
        if isinstance(composition, Fuse):
            return Scope(handler=self.fusion_plan(composition.fusion).handler(capture), capture=capture)
        names = (composition.adapter,) if isinstance(composition, Single) else getattr(composition, "adapters", None)
        if names is None:
            raise ConfigError(f"unsupported composition {composition!r}")
        missing = sorted({a for a in names if a is not None and a not in self.adapters})
        if missing:
            raise ConfigError(f"unknown adapters {missing}")
        modules = [self.adapters[a] if a is not None else None for a in names]
        bottlenecks = [m if isinstance(m, BottleneckAdapter) else None for m in modules]
        loras = [m if isinstance(m, LoraAdapter) else None for m in modules]
        handler = None
        if any(b is not None for b in bottlenecks):
            single = len(bottlenecks) == 1 or all(b is bottlenecks[0] for b in bottlenecks)
            handler = routing.single(bottlenecks[0]) if single else routing.mixed(bottlenecks)  # type: ignore[arg-type]
        return Scope(handler=handler, linear=lora.gathered(loras), capture=capture)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("encoder.")]

    # -- running --------------------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        scope: Scope | None = None,
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._accepts_token_types:
            kwargs["token_type_ids"] = token_type_ids
        with self.router.scoped(scope):
            return self.encoder(**kwargs).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        head: str | None = None,
        composition: Composition | None = None,
        return_fusion_attention: bool = False,
    ) -> EncoderOutput:
        capture: dict[str, torch.Tensor] | None = {} if return_fusion_attention else None
        scope = self.scope(composition, capture)
        hidden = self.encode(input_ids, attention_mask, token_type_ids, scope)
        logits = self.heads[head](hidden, attention_mask) if head is not None else None
        attention = None
        if capture is not None:
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
            attention = {k: (p * mask).sum(1) / mask.sum(1).clamp(min=1) for k, p in capture.items()}
        return EncoderOutput(hidden=hidden, logits=logits, fusion_attention=attention)

    def train(self, mode: bool = True) -> AdaptedEncoder:
        super().train(mode)
        if mode and not self.base_dropout:
            self.encoder.eval()
        return self
