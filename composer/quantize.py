"""An int8 base for serving and training on the CPU: the encoder's linear projections run int8 matmuls.

`quantize(base)` gives every adapted linear (query, key, value, attention output, FFN in and out) int8 weights with
one scale per output channel. At run time each token's activations are quantised with their own scale (symmetric,
per token), multiplied in int8 with int32 accumulation (oneDNN's int8 linear on packed weights, AMX where the CPU
has it: `ONEDNN`; `torch._int_mm` where torch has no oneDNN or oneDNN runs a slow kernel here), and dequantised by
the product of the two scales, with the bias added in fp32. Query, key and value, which read the same input, share
one quantisation of it and one int8 matmul per forward (`Int8Sibling`). The quantisation and the dequantisation are
each one pass where torch.compile builds them (`KERNELS`: only these elementwise kernels, once per process, for
every shape): on 8 reviews of ~118 tokens that took int8 ÷ fp32 from 1.61 to 1.75 for a single adapter and from
1.37-1.40 to 1.53 for a fuse-8 and a mixed batch (9 rounds). Everything else stays fp32: embeddings, LayerNorms,
attention, and every adapter, prompt and head, which are the same files at both precisions. The base keeps its
identity (hashed from the fp32 weights when it loaded), so a module trained on one precision attaches to the other;
the quantised linears' fp32 weights are released (left on the meta device, shapes only), so an int8 base holds about
5/16 of their bytes (a quarter, packed for oneDNN, and the fused query/key/value also plain). The compiled kernels
are built where a base is quantised to serve; a training process runs the eager passes (a LoRA step took 362 against
367 ms, and the compiler held 45-130 MB).

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

import logging
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from composer.errors import ConfigError
from composer.injection import FAMILIES, inject, linear_shapes, linear_targets
from composer.nf4 import NF4Linear
from composer.quantised import QuantisedLinear

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "int8", "nf4")  # nf4: QLoRA's 4-bit base, to train on (composer.nf4)


def _quantise(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token (row) of `flat` as int8 with its own scale: (values, the row's largest magnitude)."""
    amax = flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-8)
    return (flat * (127.0 / amax)).round().to(torch.int8), amax


def _dequantise(y: torch.Tensor, scale: torch.Tensor, amax: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """An int32 product back to fp32: times the weight's scale per column and the token's per row, plus the bias
    (in place on the one fp32 copy: eager, that was 2-10x faster than allocating at each step; compiled, equal)."""
    return y.to(torch.float32).mul_(scale).mul_(amax / 127.0).add_(bias)


class _Kernels:
    """`_quantise` and `_dequantise`, each one pass over its tensor where torch.compile can build them (a C++
    compiler is on the machine), as several eager passes otherwise; the same numbers either way. Compiled once
    per process, on first use (about 6 s; `quantize` warms them when a base is quantised), for every shape."""

    def __init__(self) -> None:
        self.quantise, self.dequantise = EAGER
        self.ready = False
        self.lock = threading.Lock()

    def current(self) -> tuple[Any, Any]:
        """The compiled kernels if this process built them, the eager passes otherwise (never builds)."""
        return (self.quantise, self.dequantise) if self.ready else EAGER

    def get(self) -> tuple[Any, Any]:
        if not self.ready:
            with self.lock:
                if not self.ready:
                    self._build()
        return self.quantise, self.dequantise

    def _build(self) -> None:
        try:
            q = torch.compile(_quantise, dynamic=True)
            d = torch.compile(_dequantise, dynamic=True)
            x = torch.linspace(-1.0, 1.0, 160).view(20, 8)  # not from the RNG: building draws nothing
            xq, amax = q(x)
            d(torch._int_mm(xq, torch.ones(8, 24, dtype=torch.int8)), torch.ones(24), amax, torch.zeros(24))
            self.quantise, self.dequantise = q, d
        except Exception as e:  # noqa: BLE001 - no compiler, or an unsupported platform: the eager passes
            log.warning("int8 kernels run eager (torch.compile failed: %s)", str(e).splitlines()[0][:200])
        self.ready = True


EAGER = (_quantise, _dequantise)
KERNELS = _Kernels()
COMPILED_FROM = 65536  # elements of a linear's input: from here on the compiled kernels (measured, bench/int8)


def exact(matmul: Any) -> bool:
    """Whether `matmul(xq [tokens, in] int8, w [in, out] int8)` gives the exact integer products on this CPU, on the
    inputs where int16 pair sums would saturate. Kernels for CPUs without VNNI or AMX add pairs of u8·s8 products in
    int16 (`vpmaddubsw`): with oneDNN capped at AVX-512 without VNNI (Skylake's), `torch._int_mm` put a random
    256→64 linear's outputs off by up to 6.4; capped at AVX2, both kernels saturate. A kernel that is not exact is
    not used (tests/composer/test_int8.py runs each cap)."""
    xq = torch.full((2, 64), 127, dtype=torch.int8)
    xq[1] = -127
    w = torch.full((64, 4), 127, dtype=torch.int8)
    w[:, 1] = -127
    w[::2, 2] = -127
    want = (xq.to(torch.int64) @ w.to(torch.int64)).to(torch.float32)  # |sums| < 2^24: exact in fp32 as well
    return bool(torch.equal(matmul(xq, w).to(torch.float32), want))


def probe() -> tuple[torch.Tensor, torch.Tensor]:
    """What `fast` times kernels on: 64 int8 tokens and a 256→256 int8 weight [in, out], not from the RNG (it
    draws nothing)."""
    xq = (torch.arange(64 * 256) % 255 - 127).to(torch.int8).view(64, 256)
    w = (torch.arange(256 * 256) % 253 - 126).to(torch.int8).view(256, 256)
    return xq, w


def fast(candidate: Callable[[], object], baseline: Callable[[], object], slower: float = 4.0) -> bool:
    """Whether a call of `candidate` takes at most `slower` times one of `baseline` (each on `probe`'s inputs, their
    weights prepared beforehand; best of 5 after a warm-up: a loaded machine slows both). On a CPU where oneDNN has
    no int8 brgemm kernel it runs its reference kernel: on an AMD EPYC with AVX-512 VNNI and no AMX, 76 ms against
    torch._int_mm's 0.04 for 16 tokens through a 384→1536 linear (5 s against 0.9 ms for 1,024), where on an AMX CPU
    it ran twice as fast."""
    import time

    def best(call: Callable[[], object]) -> float:
        call()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(candidate) <= slower * best(baseline)


class _IntMM:
    """`torch._int_mm`, where it is exact on this CPU (`exact`); otherwise the int8 values multiplied in fp32
    (exact while a row's sum stays under 2^24, within fp32 rounding beyond), with a warning: no speed, but the
    right numbers and the memory of an int8 base."""

    def __init__(self) -> None:
        self._exact: bool | None = None

    def __call__(self, xq: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        if self._exact is None:
            self._exact = exact(torch._int_mm)
            if not self._exact:
                log.warning("int8 products are not exact on this CPU (no VNNI or AMX): they run in fp32")
        if self._exact:
            return torch._int_mm(xq, weight_t)
        return xq.to(torch.float32) @ weight_t.to(torch.float32)


INT_MM = _IntMM()


class _OneDNN:
    """oneDNN's int8 linear (`torch.ops.onednn`, the op torch's own x86 int8 path lowers to): a brgemm matmul on AMX
    tiles or VNNI where the CPU has them, on weights packed once into its blocked layout. `torch._int_mm` on the CPU
    runs oneDNN's older gemm API, without AMX: on this machine's AMX CPU, 1024 tokens through a 384→1536 linear
    took 366 µs against 697 (fp32: 3,360). It takes one activation scale for the whole input, so it is called with
    scale 1 and each token's own scale applied after, as before: the int32 products are exact and the scales are
    applied per column and per row, so the two paths agree to the last bit of a fused multiply-add (tested)."""

    def __init__(self) -> None:
        self._exact: bool | None = None
        self._available: bool | None = None

    def exact(self) -> bool:
        """Whether this torch has the op and it multiplies exactly on this CPU (`exact`), fast or not."""
        if self._exact is None:
            try:
                self._exact = exact(self._product)
            except (AttributeError, RuntimeError, NotImplementedError) as e:  # a build without oneDNN
                log.info("int8 matmuls run torch._int_mm (no oneDNN int8 linear: %s)", str(e).splitlines()[0][:200])
                self._exact = False
        return self._exact

    def available(self) -> bool:
        """Whether int8 linears serve through it here: it is exact, and not far slower than `INT_MM` (`fast`)."""
        if self._available is None:
            self._available = self.exact() and self._fast_here()
            if self.exact() and not self._available:
                log.warning("int8 matmuls run torch._int_mm: oneDNN's int8 linear runs a far slower kernel on this CPU")
        return self._available

    def _fast_here(self) -> bool:
        """`fast` against `INT_MM` on `probe`'s inputs, the weights packed once beforehand, as a served linear's are
        (packing is no part of a forward)."""
        xq, w = probe()
        packed, scale = self.pack(w), torch.ones(w.shape[1])
        return fast(lambda: self.matmul(xq, packed, scale), lambda: INT_MM(xq, w))

    def _product(self, xq: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.matmul(xq, self.pack(w), torch.ones(w.shape[1]))

    @staticmethod
    def pack(weight_t: torch.Tensor) -> torch.Tensor:
        """int8 weights [in, out] in oneDNN's blocked layout (an opaque tensor: not viewed, copied or pickled)."""
        return torch.ops.onednn.qlinear_prepack(weight_t.t().contiguous(), None)

    @staticmethod
    def matmul(xq: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """xq [tokens, in] int8 times the packed weights, in fp32, each column times its weight scale."""
        zero = torch.zeros(scale.shape[0], dtype=torch.long)  # symmetric weights
        return torch.ops.onednn.qlinear_pointwise(
            xq, 1.0, 0, packed, scale, zero, None, 1.0, 0, torch.float32, "none", [], ""
        )


ONEDNN = _OneDNN()


def _rescale(y: torch.Tensor, amax: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """oneDNN's fp32 product (the weight's scale applied) times each token's scale, plus the bias: one fused
    multiply-add pass, in place (124 against 243 µs for mul_ then add_ on 1024 tokens of 1536), which may round
    the last bit differently from `_dequantise`'s two steps."""
    return torch.addcmul(bias, y, amax / 127.0, out=y)


class Int8Linear(QuantisedLinear):
    """A linear's int8 form: int8 weights [in, out] with a scale per output channel, and the fp32 bias; served
    through oneDNN's packed weights once `pack` made them (`quantize` for a serving base)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        w = weight.detach().float()
        self.scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # [out]
        self.weight_t: torch.Tensor | None = (
            torch.round(w / self.scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous()
        )
        self.bias = bias.detach().float() if bias is not None else torch.zeros(w.shape[0])
        self.out_features = w.shape[0]
        self.packed: torch.Tensor | None = None

    def pack(self, keep: bool = False) -> bool:
        """Serve through oneDNN's int8 linear where this torch has it (`ONEDNN`); `keep`: keep the plain int8
        weights as well (the fused query/key/value's parts view them), else they go, and a backward or a part
        reads them back from the packed form. False where oneDNN is not there (nothing changes)."""
        if self.packed is None and ONEDNN.available():
            self.packed = ONEDNN.pack(self.int8())
            self.weight_t = self.weight_t if keep else None
        return self.packed is not None

    def int8(self) -> torch.Tensor:
        """The int8 weights, [in, out]."""
        return self.weight_t if self.weight_t is not None else self.packed.to_dense()  # type: ignore[union-attr]

    def dequantised(self) -> torch.Tensor:
        """The weight the int8 form stands for, [out, in] (for backward passes)."""
        return self.int8().t().float() * self.scale[:, None]

    def run(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        # a compiled kernel's call costs what its fused passes save on a small batch (about 100 tokens of 384)
        quantise, dequantise = KERNELS.current() if flat.numel() >= COMPILED_FROM else EAGER
        xq, amax = quantise(flat)  # each token its own scale
        if self.packed is not None:
            y = _rescale(ONEDNN.matmul(xq, self.packed, self.scale), amax, self.bias)
        else:
            y = dequantise(INT_MM(xq, self.int8()), self.scale, amax, self.bias)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    @classmethod
    def stacked(cls, linears: list[nn.Linear]) -> Int8Linear:
        """One int8 linear computing several that read the same input, their outputs side by side."""
        biases = [lin.bias if lin.bias is not None else torch.zeros(lin.out_features) for lin in linears]
        return cls(torch.cat([lin.weight for lin in linears]), torch.cat(biases))

    def part(self, columns: slice) -> Int8Linear:
        """The linear of some of this one's outputs, viewing its weights (no bytes of its own): scales are per
        output channel, so it equals that linear quantised alone, bit for bit."""
        part = object.__new__(Int8Linear)
        part.weight_t, part.scale, part.bias = self.int8()[:, columns], self.scale[columns], self.bias[columns]
        part.out_features, part.packed = part.scale.shape[0], None
        return part


class Int8Sibling:
    """One of a layer's linears that read the same input (query, key and value): served from one quantisation of
    that input and one int8 matmul for all of them, run by whichever is called first in a forward and handed to
    the others through the forward's memo (`Scope.memo`, never kept past the forward). Each output is handed out
    once: a second call, or another input, runs the matmul again. In training the fused linear runs through
    autograd as one (`QuantisedLinear.__call__`): the input's gradient is one product with the stacked dequantised
    weight instead of three (a LoRA's step time: a tie, 312 against 308 ms). Without a memo it is its own
    `Int8Linear`."""

    def __init__(self, own: Int8Linear, fused: Int8Linear, parts: dict[str, slice], name: str):
        self.own, self.fused, self.parts, self.name = own, fused, parts, name
        self.out_features = own.out_features

    def dequantised(self) -> torch.Tensor:
        return self.own.dequantised()

    def __call__(self, x: torch.Tensor, memo: dict[int, Any] | None = None) -> torch.Tensor:
        if memo is None:
            return self.own(x)
        entry = memo.get(id(self.fused))
        if entry is None or entry[0] is not x or self.name not in entry[1]:
            y = self.fused(x)
            entry = memo[id(self.fused)] = (x, {n: y[..., part] for n, part in self.parts.items()})
        return entry[1].pop(self.name)


def quantize(base: Any, kernels: bool = True) -> None:
    """Make `base` (a LoadedBase on the CPU) an int8 base, in place: its identity stays, the quantised linears'
    fp32 weights go. `kernels`: build the compiled kernels now, not in a first request (a serving process); a
    training process passes False and runs the eager passes."""
    if base.precision == "int8":
        return
    if base.precision != "fp32":
        raise ConfigError(f"precision: the base is already {base.precision}")
    if base.device.type != "cpu":
        raise ConfigError(f"precision: int8 runs on the CPU (the base is on {base.device}); serve fp32 on a GPU")
    inject(base.model, base.family)  # the linears' forwards look for their int8 form (injection._patch_linears)
    if kernels:
        KERNELS.get()
    spec = FAMILIES[base.family]
    targets = linear_targets(base.family, spec.linears)
    siblings = spec.siblings
    for layer, name in linear_shapes(base.model, base.family, targets, None, base.num_layers):
        if name not in siblings:
            linear = _linear(base, layer, name)
            q = Int8Linear(linear.weight, linear.bias)
            q.pack()  # oneDNN's packed weights alone, where it is there
            object.__setattr__(linear, "quantised", q)  # not a submodule: the state dict keeps the fp32 names
    for layer in range(base.num_layers):
        linears = [_linear(base, layer, n) for n in siblings]
        fused, start, parts = Int8Linear.stacked(linears), 0, {}
        fused.pack(keep=True)  # its parts view the plain int8 weights
        for n, lin in zip(siblings, linears, strict=True):
            parts[n] = slice(start, start + lin.out_features)
            start += lin.out_features
        for n, lin in zip(siblings, linears, strict=True):  # each its own part of the fused weights
            object.__setattr__(lin, "quantised", Int8Sibling(fused.part(parts[n]), fused, parts, n))
    _release(base, targets)
    base.precision = "int8"


def quantize_nf4(base: Any) -> None:
    """Make `base` an NF4 base, in place, on its own device (composer.nf4): its identity stays, the quantised
    linears' fp32 weights go."""
    if base.precision == "nf4":
        return
    if base.precision != "fp32":
        raise ConfigError(f"precision: the base is already {base.precision}")
    inject(base.model, base.family)
    targets = linear_targets(base.family, FAMILIES[base.family].linears)
    for layer, name in linear_shapes(base.model, base.family, targets, None, base.num_layers):
        linear = _linear(base, layer, name)
        object.__setattr__(linear, "quantised", NF4Linear(linear.weight, linear.bias))
    _release(base, targets)
    base.precision = "nf4"


def set_precision(base: Any, precision: str, kernels: bool = True) -> None:
    """Give a loaded fp32 base its precision: int8 (`quantize`) or nf4 (`quantize_nf4`); fp32 leaves it."""
    check_precision(precision)
    if precision == "int8":
        quantize(base, kernels)
    elif precision == "nf4":
        quantize_nf4(base)


def _release(base: Any, targets: tuple[str, ...]) -> None:
    """The quantised linears' fp32 weights to the meta device (shapes only): their quantised form serves them
    and gives backward its dequantised weight."""
    for layer, name in linear_shapes(base.model, base.family, targets, None, base.num_layers):
        linear = _linear(base, layer, name)
        linear.weight = nn.Parameter(linear.weight.detach().to("meta"), requires_grad=False)


def _linear(base: Any, layer: int, name: str) -> nn.Linear:
    return base.model.get_submodule(f"{FAMILIES[base.family].layers_path}.{layer}.{name}")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision
