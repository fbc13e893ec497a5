"""An int8 base for serving and training on the CPU: the encoder's linear projections run int8 matmuls.

`quantize(base)` gives every adapted linear (query, key, value, attention output, FFN in and out) int8 weights
with one scale per output channel. At run time each token's activations are quantised with their own scale
(symmetric, per token), multiplied in int8 with int32 accumulation (`torch._int_mm`), and dequantised by the
product of the two scales, with the bias added in fp32. Everything else stays fp32: embeddings, LayerNorms,
attention, and every adapter, prompt and head, which are the same files at both precisions. The base keeps its
fp32 weights and its identity, so a module trained on one precision attaches to the other.

Per-token scales, not per-tensor, because a served row must not depend on the rows it is batched with: torch's
dynamic int8 linear (`torch.ao`, fbgemm/oneDNN) was faster here (190 against 255 µs for a 384→1536 linear on
112 tokens, fp32 480), but it scales the whole batch's activations at once, so a row's output changed with its
neighbours (by 4e-3 on the tiny test base) — the per-row oracle refuses it. Per-token int8 is also closer to
fp32 (largest error 0.049 against 0.095 on that linear). Weight-only int8 (`torch._weight_int8pack_mm`) keeps
activations exact but ran 40x slower than fp32 on this CPU; torchao's CPU path needs torch.compile, and ONNX
Runtime would need every adapter kind in the exported graph.

Training on an int8 base (the survey's QLoRA row, with int8 for NF4: no NF4 CPU kernel is installed here)
needs gradients through the frozen linears: the forward runs the int8 kernel and the backward multiplies by the
dequantised weight, as QLoRA backpropagates through its dequantised 4-bit weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from composer.errors import ConfigError
from composer.injection import FAMILIES, inject, linear_shapes, linear_targets

PRECISIONS = ("fp32", "int8")


class _Int8Linear(torch.autograd.Function):
    """Forward through the int8 kernel; backward to the input through the dequantised weight (the weight
    itself is frozen)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: Int8Linear) -> torch.Tensor:  # type: ignore[override]
        ctx.q = q
        return q.run(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad @ ctx.q.dequantised().to(grad.dtype), None


class Int8Linear:
    """A linear's int8 form: int8 weights [in, out] with a scale per output channel, and the fp32 bias."""

    def __init__(self, linear: nn.Linear):
        w = linear.weight.detach().float()
        self.scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # [out]
        self.weight_t = torch.round(w / self.scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous()
        self.bias = linear.bias.detach().float() if linear.bias is not None else None
        self.out_features = w.shape[0]

    def dequantised(self) -> torch.Tensor:
        """The weight the int8 form stands for, [out, in] (for backward passes)."""
        return self.weight_t.t().float() * self.scale[:, None]

    def run(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        amax = flat.abs().amax(dim=1, keepdim=True).clamp_(min=1e-8)  # each token its own scale
        xq = (flat * (127.0 / amax)).round_().to(torch.int8)
        y = torch._int_mm(xq, self.weight_t).to(torch.float32)
        y.mul_(self.scale).mul_(amax / 127.0)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _Int8Linear.apply(x, self)
        return self.run(x)


def quantize(base: Any) -> None:
    """Make `base` (a LoadedBase on the CPU) an int8 base, in place; its fp32 weights stay for its identity."""
    if base.device.type != "cpu":
        raise ConfigError(f"precision: int8 runs on the CPU (the base is on {base.device}); serve fp32 on a GPU")
    inject(base.model, base.family)  # the linears' forwards look for their int8 form (injection._patch_linears)
    targets = linear_targets(base.family, FAMILIES[base.family].linears)
    for layer, name in linear_shapes(base.model, base.family, targets, None, base.num_layers):
        linear = _linear(base, layer, name)
        object.__setattr__(linear, "int8", Int8Linear(linear))  # not a submodule: the state dict stays fp32
    base.precision = "int8"


def _linear(base: Any, layer: int, name: str) -> nn.Linear:
    return base.model.get_submodule(f"{FAMILIES[base.family].layers_path}.{layer}.{name}")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision
