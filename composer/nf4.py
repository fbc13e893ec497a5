"""An NF4 base for training: QLoRA's 4-bit NormalFloat weights (Dettmers et al. 2023) on any device.

Each adapted linear's weight is quantised in blocks of 64 (row-major): the block's absmax scales it to [-1, 1],
and each weight takes the nearest of the 16 NF4 values (ties to the lower one), two codes to a byte. That is
bitsandbytes' `quantize_4bit(quant_type="nf4", blocksize=64)` exactly: the packed codes, the absmax and the
dequantised weight equal its own (tests/fixtures/parity/nf4, made with bitsandbytes 0.50.2). It is computed
here in plain PyTorch because bitsandbytes' CPU backend, on a CPU with AVX-512 BF16, runs its 4-bit matmul in
bfloat16 (1.4e-2 off its own dequantised weight on a 384→1536 linear) and at import tries to fetch a kernel
from the Hugging Face hub.

QLoRA's double quantisation, as the base does it (and as bitsandbytes' `compress_statistics=True`): the absmax
less its mean is quantised again, in blocks of 256, to bitsandbytes' signed 8-bit dynamic map (`DYNAMIC`), so a
parameter costs 4 + 8/64 + 32/(64·256) = 4.127 bits instead of 4.5. Codes, second absmax and dequantised weights
equal bitsandbytes' own (the fixture's `double` cases).

A forward dequantises each weight to fp32 and runs the fp32 linear; its backward dequantises again (nothing
fp32 is kept between them), as QLoRA backpropagates through its dequantised 4-bit weights. The fp32 weights
are released (meta, shapes only), so the base holds 4.127 bits a parameter in its linears. It trains adapters
(`base_precision: nf4`); they serve on either serving precision, as any module does.
"""

from __future__ import annotations

import torch
from torch import nn

from composer.quantised import QuantisedLinear

BLOCK = 64
CODE = torch.tensor(  # bitsandbytes' NF4 table: the quantiles of N(0, 1), normalised to [-1, 1], with an exact 0
    [
        *(-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453),
        *(-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0),
        *(0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224),
        *(0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0),
    ]
)
BOUNDS = (CODE[:-1] + CODE[1:]) / 2
PAIRS = torch.stack([CODE.repeat_interleave(16), CODE.repeat(16)], dim=1)  # byte b: (CODE[b >> 4], CODE[b & 15])


def _dynamic_map() -> torch.Tensor:
    """bitsandbytes' `create_dynamic_map(signed=True)`: 256 values in [-1, 1], a dynamic exponent (10^-6 to 1)
    and a fraction that shrinks as the exponent grows (Dettmers 2016), made as it makes them, to the rounding."""
    data: list[float] = []
    for i in range(7):  # max_exponent_bits 7 of 8 bits, signed
        boundaries = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


DYNAMIC = _dynamic_map()
DYNAMIC_BOUNDS = (DYNAMIC[:-1] + DYNAMIC[1:]) / 2
SECOND_BLOCK = 256  # absmax values per block of the double quantisation


def quantise_absmax(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QLoRA's double quantisation: (codes uint8 [n], second absmax fp32 [⌈n/256⌉], offset fp32 [1]) of the
    absmax less its mean, each value the nearest of `DYNAMIC` after its block's largest magnitude scales it."""
    offset = absmax.mean().reshape(1)
    centred = absmax - offset
    n = centred.numel()
    blocks = nn.functional.pad(centred, (0, -n % SECOND_BLOCK)).view(-1, SECOND_BLOCK)
    absmax2 = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax2.clamp(min=1e-38))[:, None]).clamp(-1, 1).reshape(-1)[:n]
    return torch.bucketize(scaled, DYNAMIC_BOUNDS.to(scaled.device)).to(torch.uint8), absmax2, offset


def dequantise_absmax(codes: torch.Tensor, absmax2: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The fp32 absmax the double quantisation stands for: its code's value times its block's absmax, plus the
    offset (as bitsandbytes' `dequantize_blockwise` and then `+= offset`)."""
    n = codes.numel()
    values = DYNAMIC.to(codes.device).index_select(0, codes.long())
    per = absmax2.repeat_interleave(SECOND_BLOCK)[:n]
    return (values * per).add_(offset)


def quantise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed codes uint8 [⌈n/2⌉], absmax fp32 [⌈n/64⌉]) of a weight, flattened row-major. As bitsandbytes does
    it, to the rounding: full blocks times the reciprocal of their absmax, a short last block divided by its own."""
    flat = weight.detach().reshape(-1).float()
    n = flat.numel()
    full = n - n % BLOCK
    blocks = flat[:full].view(-1, BLOCK)
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1).reshape(-1)
    if full < n:
        last = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, last.view(1)])
        scaled = torch.cat([scaled, (flat[full:] / last).clamp(-1, 1)])
    codes = torch.bucketize(nn.functional.pad(scaled, (0, n % 2)), BOUNDS.to(scaled.device)).to(torch.uint8)
    return (codes[::2] << 4) | codes[1::2], absmax


def dequantise(
    packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, ...], pairs: torch.Tensor = PAIRS
) -> torch.Tensor:
    """The fp32 weight the codes stand for: each byte's two values from one table (`PAIRS`, on the codes'
    device), times its block's absmax, in place."""
    n = 1
    for d in shape:
        n *= d
    out = pairs.index_select(0, packed.long()).view(-1)[:n]  # 7x faster than pairs[packed.long()]
    full = n - n % BLOCK
    out[:full].view(-1, BLOCK).mul_(absmax[: full // BLOCK, None])
    if full < n:
        out[full:].mul_(absmax[-1])
    return out.view(shape)


class NF4Linear(QuantisedLinear):
    """A linear's NF4 form: packed codes, absmax per block of 64 (`double`: itself quantised, QLoRA's double
    quantisation, as the base does it), and the fp32 bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, double: bool = True):
        self.shape = tuple(weight.shape)
        self.packed, absmax = quantise(weight)
        self.absmax: torch.Tensor | None = None if double else absmax
        self.double = quantise_absmax(absmax) if double else None
        self.pairs = PAIRS.to(self.packed.device)
        self.bias = bias.detach().float() if bias is not None else None

    def scales(self) -> torch.Tensor:
        """The absmax per block of 64, fp32."""
        return self.absmax if self.double is None else dequantise_absmax(*self.double)

    def dequantised(self) -> torch.Tensor:
        return dequantise(self.packed, self.scales(), self.shape, self.pairs)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return nn.functional.linear(x, self.dequantised().to(x.dtype), bias)
