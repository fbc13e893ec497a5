"""What a quantised base's linear forms share (the int8 one of composer.quantize, the NF4 one of composer.nf4):
a forward through their own kernel, and a backward to the input through the dequantised weight, made again in
the backward rather than kept (the weight itself is frozen), as QLoRA backpropagates through its dequantised
4-bit weights."""

from __future__ import annotations

from typing import Any

import torch


class _Through(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: QuantisedLinear) -> torch.Tensor:  # type: ignore[override]
        ctx.q = q
        return q.run(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad @ ctx.q.dequantised().to(grad.dtype), None


class QuantisedLinear:
    """A frozen linear's quantised form: `run` computes it, `dequantised` gives the weight it stands for."""

    def run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dequantised(self) -> torch.Tensor:
        """The weight the quantised form stands for, [out, in]."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, memo: dict[int, Any] | None = None) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _Through.apply(x, self)
        return self.run(x)
