"""`AdaptedEncoder`: one frozen base with named adapters, fusions and heads, whatever their method.

The composition a forward runs (`Single`, `Fuse`, `BatchSplit`, or None for the bare base) is an
argument of that forward. It lives in a scope that the forward sets and always resets, so
nothing one request runs stays on the shared layers for the next one.

The encoder knows no method. An adapter config builds its module (`cfg.build(model)`); an adapter
module says which slot of the scope it fills (`slot`: "site" for what runs where a sublayer ends,
"linear" for updates of a linear projection) and routes a batch whose row i uses module i
(`route(modules)`, None for a row without one); a fusion config builds its fusion over member
modules (`cfg.build(members, modules)`), and a fusion plans its forward (`plan(modules)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from composer.base import LoadedBase
from composer.composition import (
    Average,
    BatchSplit,
    Composition,
    Fuse,
    Parallel,
    Single,
    Stack,
    check_tree,
    fusions,
    leaves,
)
from composer.errors import ConfigError
from composer.heads import HeadConfig, PredictionHead
from composer.injection import Scope, chain, inject


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
        self._plans: dict[str, Any] = {}  # per loaded fusion: its members stacked, built on first use
        # The frozen base runs without dropout by default (see docs/architecture.md, "Frozen base").
        self.base_dropout = False
        self._accepts_token_types = base.family != "distilbert"

    @property
    def device(self) -> torch.device:
        return self.base.device

    # -- building -------------------------------------------------------------------------
    def build_adapter(self, cfg: Any, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The adapter `cfg` describes, for this model, not attached: freshly initialised, or with `weights`
        (loaded strictly; built without initialising, which loading would overwrite anyway)."""
        # a module added to a model in eval mode must not run dropout
        return on_device(_built(lambda: cfg.build(self), weights), self.device).train(self.training)

    def build_head(self, cfg: HeadConfig, weights: dict[str, torch.Tensor] | None = None) -> PredictionHead:
        head = on_device(_built(lambda: PredictionHead(cfg, self.base.hidden_size), weights), self.device)
        return head.train(self.training)  # type: ignore[return-value]

    def add_adapter(self, name: str, cfg: Any, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
        if name in self.adapters:
            raise ConfigError(f"adapter {name!r} already exists")
        adapter = self.adapters[name] = self.build_adapter(cfg, weights)
        return adapter

    def add_head(self, name: str, cfg: HeadConfig, weights: dict[str, torch.Tensor] | None = None) -> PredictionHead:
        head = self.heads[name] = self.build_head(cfg, weights)
        return head

    def add_fusion(self, name: str, members: list[str], cfg: Any) -> nn.Module:
        """A fusion over attached adapters, built by its config (`composer.fusion.modules.FusionConfig`)."""
        if name in self.fusions:
            raise ConfigError(f"fusion {name!r} already exists")
        if len(set(members)) != len(members):
            raise ConfigError(f"a fusion lists each adapter once, got {members}")
        missing = [m for m in members if m not in self.adapters]
        if missing:
            raise ConfigError(f"unknown adapters {missing}")
        fusion = cfg.build(members, [self.adapters[m] for m in members]).to(self.device)
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

    def fusion_plan(self, name: str) -> Any:
        """How a fusion's forward runs (its members stacked), built once and kept until the fusion is removed."""
        if name not in self.fusions:
            raise ConfigError(f"unknown fusion {name!r}")
        plan = self._plans.get(name)
        if plan is None:
            fusion = self.fusions[name]
            plan = self._plans[name] = fusion.plan([self.adapters[m] for m in fusion.members])
        return plan

    def scope(self, composition: Composition | None, capture: dict[str, torch.Tensor] | None = None) -> Scope:
        """What one forward under `composition` asks of the shared layers (None: the bare base): site
        handlers for bottleneck adapters and fusions, linear handlers for LoRAs."""
        if composition is None:
            return Scope()
        if isinstance(composition, Fuse):
            return Scope(handler=self.fusion_plan(composition.fusion).handler(capture), capture=capture)
        if isinstance(composition, Stack | Average):
            return Scope(handler=self._tree(composition), capture=capture)
        if isinstance(composition, Parallel):
            raise ConfigError("a Parallel replicates its batch: run it with composer.composed.parallel_hidden")
        if isinstance(composition, BatchSplit) and any(
            not (r is None or isinstance(r, str)) for r in composition.adapters
        ):
            return Scope(handler=self._tree(composition), capture=capture)
        names = (composition.adapter,) if isinstance(composition, Single) else getattr(composition, "adapters", None)
        if names is None:
            raise ConfigError(f"unsupported composition {composition!r}")
        missing = sorted({a for a in names if a is not None and a not in self.adapters})
        if missing:
            raise ConfigError(f"unknown adapters {missing}")
        modules = [self.adapters[a] if a is not None else None for a in names]
        sites = [m if m is not None and m.slot == "site" else None for m in modules]
        present = list(dict.fromkeys(type(m) for m in sites if m is not None))
        if len(present) > 1:
            raise ConfigError(f"one forward routes one kind of site module, got {[t.__name__ for t in present]}")

        # the linear methods (LoRA, (IA)³, BitFit, …) chain: each routes its own rows, the others pass through.
        # Methods that share a route (LoRA and AdaLoRA gather A and B alike; (IA)³ and BitFit gather vectors
        # alike) route their rows together, one handler for both.
        def route_of(m: nn.Module) -> Any:
            return getattr(type(m).route, "__func__", type(m).route)

        linears: dict[Any, type] = {}
        for m in modules:
            if m is not None and m.slot == "linear":
                linears.setdefault(route_of(m), type(m))
        routes = [
            t.route([m if m is not None and m.slot == "linear" and route_of(m) is key else None for m in modules])
            for key, t in linears.items()
        ]
        return Scope(
            handler=present[0].route(sites) if present else None,
            linear=chain([r for r in routes if r is not None]),
            capture=capture,
        )

    def _tree(self, tree: Stack | Average | BatchSplit) -> Any:
        """The site handler of a Stack/Average tree, or of rows each with its own tree: the members' method
        routes it (`route_tree`)."""
        rows = tree.adapters if isinstance(tree, BatchSplit) else (tree,)
        for i, row in enumerate(rows):
            if row is not None and not isinstance(row, str):
                check_tree(row, f"row {i}: {type(row).__name__.lower()}" if isinstance(tree, BatchSplit) else "")
        names = list(dict.fromkeys(n for row in rows if row is not None for n in leaves(row)))
        missing = [n for n in names if n not in self.adapters]
        if missing:
            raise ConfigError(f"unknown adapters {missing}")
        fused = {f: self.fusion_plan(f).fresh() for row in rows if row is not None for f in fusions(row)}
        modules = {n: self.adapters[n] for n in names}
        members = {**modules, **{m: self.adapters[m] for f in fused for m in self.fusions[f].members}}
        other = [f"{n} ({type(m).__name__})" for n, m in members.items() if not hasattr(m, "route_tree")]
        if other or len({type(m) for m in members.values()}) != 1:
            raise ConfigError(f"only bottleneck adapters can be stacked or averaged; got {other or list(members)}")
        return next(iter(members.values())).route_tree(tree, modules, fused)

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

    def encode_laid(
        self, inputs: dict[str, Any], overwrite: list[tuple[torch.Tensor, torch.Tensor]], scope: Scope
    ) -> torch.Tensor:
        """Hidden states of a batch laid out for its rows' prompts (`composer.rows.layout`), under `scope`."""
        scope.overwrite = overwrite
        with self.router.scoped(scope):
            return self.encoder(**inputs).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        head: str | None = None,
        composition: Composition | None = None,
        return_fusion_attention: bool = False,
    ) -> EncoderOutput:
        dev = self.device  # inputs follow the model (a batch built on the CPU meets a base on a GPU)
        input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
        token_type_ids = token_type_ids.to(dev) if token_type_ids is not None else None
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
