"""Inject adapter sites into a BERT-family encoder without copying its model code.

Every encoder layer ends each sublayer the same way: `LayerNorm(x + r)`, where `x` is
the sublayer output and `r` its residual input. A *site* intercepts exactly that call
and hands `(x, r, layer_norm)` to a `Router`, which the model side points at the active
composition. With no composition active, a site computes `LayerNorm(x + r)` as before.

One small map per family says where the sites are:
- BERT, RoBERTa, XLM-R, ELECTRA: the `attention.output` and `output` modules take
  `(hidden_states, input_tensor)` and own `dense`, `dropout`, `LayerNorm`. Their
  instance `forward` is replaced; no module is added, so the state_dict is unchanged.
- DistilBERT: the block calls `sa_layer_norm(attn + h)` and `output_layer_norm(ffn + a)`.
  Hooks capture `x` and `r` as they are computed, and the two LayerNorms' instance
  `forward` is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from composer.config import Placement

SiteHandler = Callable[
    [int, Placement, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor
]


class Router:
    """Shared by all sites of one encoder. `handler=None` means: behave like the plain encoder."""

    def __init__(self) -> None:
        self.handler: SiteHandler | None = None

    def run(self, layer: int, placement: Placement, x: torch.Tensor, r: torch.Tensor, ln: Callable) -> torch.Tensor:
        if self.handler is None:
            return ln(x + r)
        return self.handler(layer, placement, x, r, ln)


@dataclass(frozen=True)
class FamilySpec:
    layers_path: str
    style: str  # "output_module" or "distilbert"
    attention_module: str = "attention.output"
    ffn_module: str = "output"


FAMILIES: dict[str, FamilySpec] = {
    "bert": FamilySpec("encoder.layer", "output_module"),
    "roberta": FamilySpec("encoder.layer", "output_module"),
    "xlm-roberta": FamilySpec("encoder.layer", "output_module"),
    "electra": FamilySpec("encoder.layer", "output_module"),
    "distilbert": FamilySpec("transformer.layer", "distilbert"),
}


def _layers(model: nn.Module, path: str) -> nn.ModuleList:
    mod: Any = model
    for part in path.split("."):
        mod = getattr(mod, part)
    return mod


def _patch_output_module(module: nn.Module, layer: int, placement: Placement, router: Router) -> None:
    def forward(hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        x = module.dropout(module.dense(hidden_states))
        return router.run(layer, placement, x, input_tensor, module.LayerNorm)

    module.forward = forward  # instance attribute: the class and the state_dict stay untouched


def _patch_distilbert_block(block: nn.Module, layer: int, router: Router) -> list[Any]:
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def block_pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["h"] = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))

    def attn_out(_m: nn.Module, _a: tuple, out: Any) -> None:
        captured["attn"] = out[0] if isinstance(out, tuple) else out

    def ffn_pre(_m: nn.Module, args: tuple) -> None:
        captured["a"] = args[0]

    def ffn_out(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
        captured["ffn"] = out

    handles.append(block.register_forward_pre_hook(block_pre, with_kwargs=True))
    handles.append(block.attention.register_forward_hook(attn_out))
    handles.append(block.ffn.register_forward_pre_hook(ffn_pre))
    handles.append(block.ffn.register_forward_hook(ffn_out))

    def make(ln: nn.LayerNorm, placement: Placement, x_key: str, r_key: str) -> Callable:
        def plain(t: torch.Tensor) -> torch.Tensor:
            return nn.LayerNorm.forward(ln, t)

        def forward(summed: torch.Tensor) -> torch.Tensor:
            if router.handler is None:
                return plain(summed)
            return router.run(layer, placement, captured.pop(x_key), captured.pop(r_key), plain)

        return forward

    block.sa_layer_norm.forward = make(block.sa_layer_norm, "attention", "attn", "h")
    block.output_layer_norm.forward = make(block.output_layer_norm, "ffn", "ffn", "a")
    return handles


def inject(model: nn.Module, family: str) -> Router:
    """Install sites on every layer of `model` and return the router that drives them."""
    if getattr(model, "_composer_router", None) is not None:
        return model._composer_router  # type: ignore[return-value]
    spec = FAMILIES[family]
    router = Router()
    for i, block in enumerate(_layers(model, spec.layers_path)):
        if spec.style == "output_module":
            _patch_output_module(_layers(block, spec.attention_module), i, "attention", router)
            _patch_output_module(_layers(block, spec.ffn_module), i, "ffn", router)
        else:
            _patch_distilbert_block(block, i, router)
    object.__setattr__(model, "_composer_router", router)
    return router
