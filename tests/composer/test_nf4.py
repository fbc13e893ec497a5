"""The NF4 base (composer/nf4.py): QLoRA's 4-bit NormalFloat equal to bitsandbytes' own on fixed weights (codes,
absmax and dequantised weight bit for bit; matmul_4bit's output and input gradient to float rounding), and a base
whose linears run NF4 equal to a freshly built fp32 base carrying the dequantised weights, forward and through a
LoRA's gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from composer import nf4
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.injection import FAMILIES
from composer.presets import preset
from composer.quantize import quantize, quantize_nf4

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "nf4" / "nf4.safetensors"


@pytest.mark.parametrize("case", ["ffn", "ragged", "ties", "wide"])
def test_nf4_is_bitsandbytes_nf4(case):
    ref = {k.split(".", 1)[1]: v for k, v in load_file(FIXTURE).items() if k.startswith(case + ".")}
    q = nf4.NF4Linear(ref["weight"], None, double=False)
    assert torch.equal(q.packed, ref["packed"]) and torch.equal(q.absmax, ref["absmax"])
    assert torch.equal(q.dequantised(), ref["dequantised"])
    x = ref["x"].clone().requires_grad_(True)
    y = q(x)
    y.pow(2).sum().backward()
    _same_product(y, x.grad, ref)


def _same_product(y: torch.Tensor, x_grad: torch.Tensor, ref: dict[str, torch.Tensor]) -> None:
    """y and x's gradient are bitsandbytes' (matmul_4bit's) within float rounding. The weights are bit-equal (checked
    before), but a matmul's summation order follows the CPU's BLAS kernels: bit-equal on the machine that wrote the
    fixture, up to 1.3e-6 apart (a relative 1.4e-6) on an AMD EPYC."""
    torch.testing.assert_close(y, ref["y"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(x_grad, ref["x_grad"], atol=1e-6, rtol=1e-5)


def _double(case: str) -> dict[str, torch.Tensor]:
    return {k.split(".double.", 1)[1]: v for k, v in load_file(FIXTURE).items() if k.startswith(case + ".double.")}


def test_the_dynamic_map_is_bitsandbytes():
    assert torch.equal(nf4.DYNAMIC, _double("wide")["code"])


@pytest.mark.parametrize("case", ["ffn", "ragged", "ties", "wide"])
def test_double_quantisation_is_bitsandbytes_with_the_nearest_code(case):
    """QLoRA's double quantisation equals bitsandbytes' `compress_statistics=True` (codes, second absmax, offset,
    dequantised weight, matmul_4bit's output and input gradient), except where bitsandbytes' CPU kernel, whose
    binary search is approximate, took the farther of two neighbouring codes (1 absmax of the fixture's 608): the
    nearer one is taken here. A block of one absmax (its second absmax 0) dequantises to the offset whatever its
    code (bitsandbytes writes 0 there, 127 here)."""
    ref = _double(case)
    weight = load_file(FIXTURE)[f"{case}.weight"]
    q = nf4.NF4Linear(weight, None)
    assert q.double is not None and q.absmax is None
    codes, absmax2, offset = q.double
    assert torch.equal(q.packed, ref["packed"]) and torch.equal(absmax2, ref["absmax2"])
    assert torch.equal(offset, ref["offset"])
    _, absmax = nf4.quantise(weight)
    per = absmax2.repeat_interleave(nf4.SECOND_BLOCK)[: absmax.numel()]
    scaled = (absmax - offset) / per
    differ = (codes != ref["absmax"]) & (per > 0)
    ours, theirs = (nf4.DYNAMIC[codes.long()] - scaled).abs(), (nf4.DYNAMIC[ref["absmax"].long()] - scaled).abs()
    assert bool((ours[differ] < theirs[differ]).all())
    blocks_equal = (~differ).repeat_interleave(nf4.BLOCK)[: weight.numel()].view(weight.shape)
    assert torch.equal(q.dequantised()[blocks_equal], ref["dequantised"][blocks_equal])
    if not differ.any():
        x = ref["x"].clone().requires_grad_(True)
        y = q(x)
        y.pow(2).sum().backward()
        _same_product(y, x.grad, ref)


def _linears(base):  # type: ignore[no-untyped-def]
    layers = base.model.get_submodule(FAMILIES[base.family].layers_path)
    return {n: m for n, m in layers.named_modules() if isinstance(m, torch.nn.Linear)}


def _pair(tiny_bert_dir):  # type: ignore[no-untyped-def]
    """(an NF4 base, the oracle: a fresh fp32 base whose linears carry the dequantised NF4 weights), each with the
    same LoRA."""
    q = load_base(tiny_bert_dir, precision="nf4")
    oracle = load_base(tiny_bert_dir)
    with torch.no_grad():
        for name, lin in _linears(oracle).items():
            lin.weight.copy_(_linears(q)[name].__dict__["quantised"].dequantised())
    models = []
    for base in (q, oracle):
        torch.manual_seed(0)
        model = AdaptedEncoder(base)
        model.add_adapter("l", preset("lora", r=2))
        with torch.no_grad():
            for p in model.adapters["l"].parameters():
                p.add_(0.1)
        models.append(model)
    return models


def test_an_nf4_base_is_a_fresh_base_with_the_dequantised_weights(tiny_bert_dir):
    model, oracle = _pair(tiny_bert_dir)
    base = model.base
    assert base.precision == "nf4" and base.identity == load_base(tiny_bert_dir).identity
    assert all(lin.weight.is_meta for lin in _linears(base).values())  # 4.127 bits a parameter held
    batch = dict(base.tokenizer(["good movie", "a really boring plot"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        for comp in (None, Single("l")):
            got = model.eval()(**batch, composition=comp).hidden
            torch.testing.assert_close(got, oracle.eval()(**batch, composition=comp).hidden, atol=1e-5, rtol=0)
    bare = AdaptedEncoder(load_base(tiny_bert_dir)).eval()
    with torch.no_grad():
        assert (bare(**batch).hidden - model(**batch).hidden).abs().max() > 1e-3  # NF4 is not fp32


def test_a_lora_trains_on_the_nf4_base_as_on_its_dequantised_weights(tiny_bert_dir):
    grads = []
    for model in _pair(tiny_bert_dir):
        batch = dict(model.base.tokenizer(["good movie", "bad"], padding=True, return_tensors="pt"))
        model.train()(**batch, composition=Single("l")).hidden.pow(2).mean().backward()
        grads.append([p.grad for p in model.adapters["l"].parameters()])
    for got, want in zip(*grads, strict=True):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_a_base_has_one_precision(tiny_bert_dir):
    base = load_base(tiny_bert_dir, precision="nf4")
    quantize_nf4(base)  # again: nothing changes
    with pytest.raises(ConfigError, match="already nf4"):
        quantize(base, kernels=False)
    with pytest.raises(ConfigError, match="already int8"):
        quantize_nf4(load_base(tiny_bert_dir, precision="int8", kernels=False, device="cpu"))  # int8: the CPU
