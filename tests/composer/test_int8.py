"""An int8 base (composer/quantize.py): the same identity and modules as fp32, logits within a stated tolerance of
fp32, every kind serving on it in one mixed batch with each row equal to its own run, and gradients through its
int8 linears equal to those through the dequantised weights (training on a quantised base)."""

from __future__ import annotations

import pytest
import torch

from composer.base import load_base
from composer.composition import BatchSplit, Single
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.heads import HeadConfig
from composer.presets import preset
from composer.quantize import Int8Linear

KINDS = {"s": ("seq_bn", {}), "l": ("lora", {}), "a": ("adalora", {"init_r": 4, "target_r": 2}), "i": ("ia3", {})}
KINDS.update({"b": ("bitfit", {}), "d": ("diff", {}), "c": ("compacter++", {"reduction_factor": 4})})
TOLERANCE = 0.05  # int8 vs fp32 hidden states, relative to their largest magnitude (tiny random base)


def _models(tiny_bert_dir):  # type: ignore[no-untyped-def]
    models = {}
    for precision in ("fp32", "int8"):
        torch.manual_seed(0)
        model = AdaptedEncoder(load_base(tiny_bert_dir, precision=precision, device="cpu")).eval()
        for name, (p, fields) in KINDS.items():
            model.add_adapter(name, preset(p, **fields))
            model.add_head(name, HeadConfig(num_labels=2))
        models[precision] = model
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in models["fp32"].parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    own = {k: v for k, v in models["fp32"].state_dict().items() if not k.startswith("encoder.")}
    models["int8"].load_state_dict(own, strict=False)
    return models


def _batch(model):  # type: ignore[no-untyped-def]
    texts = ["good movie", "a really boring plot", "the food was fresh", "fine", "bad", "great acting", "meh", "ok"]
    return dict(model.base.tokenizer(texts, padding=True, return_tensors="pt"))


def test_int8_base_keeps_its_identity_and_stays_within_tolerance(tiny_bert_dir):
    models = _models(tiny_bert_dir)
    b32, b8 = models["fp32"].base, models["int8"].base
    assert b8.precision == "int8" and b8.identity == b32.identity
    assert b8.model.state_dict().keys() == b32.model.state_dict().keys()  # nothing int8 in the state dict
    batch = _batch(models["fp32"])
    with torch.no_grad():
        for name in ("s", "l", "d"):
            h32 = models["fp32"](**batch, composition=Single(name)).hidden
            h8 = models["int8"](**batch, composition=Single(name)).hidden
            assert 0 < (h32 - h8).abs().max() <= TOLERANCE * h32.abs().max(), name


def test_every_kind_serves_on_the_int8_base_in_one_mixed_batch(tiny_bert_dir):
    model = _models(tiny_bert_dir)["int8"]
    batch = _batch(model)
    rows = (*KINDS, None)
    with torch.no_grad():
        mixed = model(**batch, composition=BatchSplit(rows)).hidden
        for i, name in enumerate(rows):
            alone = model(**{k: v[i : i + 1] for k, v in batch.items()}, composition=Single(name) if name else None)
            n = int(batch["attention_mask"][i].sum())
            torch.testing.assert_close(mixed[i, :n], alone.hidden[0, :n], atol=1e-5, rtol=0)


def test_int8_linear_is_per_token_and_close_to_fp32():
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48)
    q = Int8Linear(linear.weight, linear.bias)
    x = torch.randn(6, 32)
    with torch.no_grad():
        ref = linear(x)
        got = q(x)
        assert (got - ref).abs().max() <= 0.02 * ref.abs().max()
        # each token alone gives exactly what it gives in the batch: its own activation scale
        assert torch.equal(torch.cat([q(x[i : i + 1]) for i in range(6)]), got)
        # and the int8 arithmetic is what it says: round(x / s_x) · round(w / s_w) · s_x · s_w + b
        sx = x.abs().amax(1, keepdim=True) / 127
        wq = torch.round(linear.weight / q.scale[:, None])
        want = (torch.round(x / sx) @ wq.t()) * sx * q.scale + linear.bias
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gradients_through_int8_linears_are_those_of_the_dequantised_weight():
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48)
    q = Int8Linear(linear.weight, linear.bias)
    x = torch.randn(3, 5, 32, requires_grad=True)
    q(x).pow(2).sum().backward()
    got = x.grad.clone()
    x.grad = None
    y = q.run(x.detach())  # the forward's own output, so only the backward differs
    ref = torch.nn.functional.linear(x, q.dequantised(), None)
    ((y + ref - ref.detach()).pow(2)).sum().backward()
    torch.testing.assert_close(got, x.grad, atol=1e-5, rtol=1e-5)


def test_a_lora_trains_on_the_int8_base(tiny_bert_dir):
    model = _models(tiny_bert_dir)["int8"].train()
    batch = _batch(model)
    out = model(**batch, head="l", composition=Single("l")).logits.logsumexp(-1).sum()
    out.backward()
    grads = [p.grad for p in model.adapters["l"].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # through the int8 linears above each LoRA


def test_unknown_precision_is_refused(tiny_bert_dir):
    with pytest.raises(ConfigError, match="precision"):
        load_base(tiny_bert_dir, precision="fp16")


def test_query_key_and_value_share_one_int8_matmul_that_equals_their_own(tiny_bert_dir, monkeypatch):
    """An int8 base runs query, key and value as one quantisation of their input and one int8 matmul per forward
    (`Int8Sibling`); each gets exactly what its own int8 linear gives, whatever else runs in the forward."""
    from composer import quantize

    model = _models(tiny_bert_dir)["int8"]
    batch = dict(model.base.tokenizer(["good movie", "a really boring plot"], padding=True, return_tensors="pt"))
    fused_runs = []
    run = quantize.Int8Linear.run

    def counted(self, x):  # type: ignore[no-untyped-def]
        fused_runs.append(self.out_features)
        return run(self, x)

    monkeypatch.setattr(quantize.Int8Linear, "run", counted)
    comps = [None, Single("l"), BatchSplit(tuple(KINDS))]
    with torch.no_grad():
        shared = [model(**batch, composition=c).hidden for c in comps]
    hidden = model.base.hidden_size
    layers = model.base.num_layers
    assert fused_runs.count(3 * hidden) == layers * len(comps)  # one q/k/v matmul per layer and forward
    monkeypatch.setattr(quantize.Int8Sibling, "__call__", lambda self, x, memo=None: self.own(x))
    with torch.no_grad():
        own = [model(**batch, composition=c).hidden for c in comps]
    for a, b in zip(shared, own, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_training_runs_query_key_and_value_as_one_int8_matmul_with_their_own_gradients(tiny_bert_dir, monkeypatch):
    """Training a LoRA on an int8 base: query, key and value run as one int8 matmul per layer through autograd, and
    the adapter's gradients (which flow through the int8 linears above each LoRA) equal those of each linear run
    alone, to float rounding (one product with the stacked weight against three)."""
    from composer import quantize

    model = _models(tiny_bert_dir)["int8"]  # eval: no dropout, the same numbers on both paths
    batch = _batch(model)
    fused_runs = []
    run = quantize.Int8Linear.run

    def counted(self, x):  # type: ignore[no-untyped-def]
        fused_runs.append(self.out_features)
        return run(self, x)

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(**batch, head="l", composition=Single("l")).logits
        out.logsumexp(-1).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.adapters["l"].parameters()]

    monkeypatch.setattr(quantize.Int8Linear, "run", counted)
    shared_out, shared = grads()
    assert fused_runs.count(3 * model.base.hidden_size) == model.base.num_layers
    assert all(g.abs().sum() > 0 for g in shared)
    monkeypatch.setattr(quantize.Int8Sibling, "__call__", lambda self, x, memo=None: self.own(x))
    own_out, own = grads()
    torch.testing.assert_close(shared_out, own_out, atol=1e-6, rtol=0)
    for a, b in zip(shared, own, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_compiled_kernels_give_the_eager_numbers():
    """Where torch.compile builds them (`quantize.KERNELS`), per-token quantisation and the dequantisation are
    one pass each; they give exactly the eager passes' numbers (the serving path picks either by size)."""
    from composer import quantize

    gen = torch.Generator().manual_seed(0)
    quantise, dequantise = quantize.KERNELS.get()
    eager_q, eager_d = quantize.EAGER
    for tokens, width, out in ((300, 384, 1152), (7, 1536, 384), (1, 32, 48)):
        flat = torch.randn(tokens, width, generator=gen) * 3
        flat[0] = 0.0  # a row of zeros keeps its floor scale
        xq, amax = quantise(flat)
        eq, ea = eager_q(flat.clone())
        assert xq.dtype == torch.int8 and torch.equal(xq, eq) and torch.equal(amax, ea)
        w = torch.randint(-127, 128, (width, out), dtype=torch.int8, generator=gen)
        y = torch._int_mm(xq, w)
        scale, bias = torch.rand(out, generator=gen), torch.randn(out, generator=gen)
        torch.testing.assert_close(dequantise(y, scale, amax, bias), eager_d(y, scale, amax, bias), atol=0, rtol=0)


def test_the_int8_base_releases_its_quantised_weights_and_quantises_once(tiny_bert_dir):
    """The quantised linears keep only their int8 form (their fp32 weights on the meta device: shapes, no bytes);
    the rest of the base stays fp32, and quantising an int8 base again changes nothing."""
    from composer.injection import FAMILIES
    from composer.quantize import quantize

    base = load_base(tiny_bert_dir, precision="int8", device="cpu", kernels=False)
    layers = base.model.get_submodule(FAMILIES[base.family].layers_path)
    linears = [m for m in layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(lin.weight.is_meta and lin.__dict__.get("quantised") is not None for lin in linears)
    assert not any(p.is_meta for n, p in base.model.named_parameters() if "embeddings" in n or "LayerNorm" in n)
    batch = dict(base.tokenizer(["good movie", "bad"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        before = base.model(**batch).last_hidden_state
        quantize(base)
        torch.testing.assert_close(base.model(**batch).last_hidden_state, before, atol=0, rtol=0)


def test_query_key_and_value_view_the_fused_int8_weights_and_equal_their_own(tiny_bert_dir):
    """A sibling's own int8 linear (a call outside a forward's scope, or an input the others do not share) is its
    part of the fused weights, no bytes of its own, and equals that linear quantised alone bit for bit."""
    from composer.injection import FAMILIES
    from composer.quantize import Int8Linear

    base = load_base(tiny_bert_dir, precision="int8", device="cpu", kernels=False)
    fp32 = load_base(tiny_bert_dir, device="cpu")
    spec = FAMILIES[base.family]
    for layer in range(base.num_layers):
        for name in spec.siblings:
            path = f"{spec.layers_path}.{layer}.{name}"
            sibling = base.model.get_submodule(path).__dict__["quantised"]
            own, fused = sibling.own, sibling.fused
            assert own.weight_t.untyped_storage().data_ptr() == fused.weight_t.untyped_storage().data_ptr()
            lin = fp32.model.get_submodule(path)
            alone = Int8Linear(lin.weight, lin.bias)
            assert torch.equal(own.weight_t, alone.weight_t) and torch.equal(own.scale, alone.scale)
            assert torch.equal(own.bias, alone.bias) and own.out_features == alone.out_features


def test_onednn_int8_linear_gives_the_int_mm_numbers(monkeypatch):
    """Packed for oneDNN's int8 linear (AMX or VNNI), a linear gives what `torch._int_mm` gives (the same int32
    products and scales; its rescaling is one fused multiply-add), each token alone exactly as in the batch;
    without its plain weights it reads them back from the packed form, for a backward. Tested wherever the kernel
    is exact, whether or not it is fast enough here to be chosen (`quantize.fast`)."""
    from composer.quantize import ONEDNN

    if not ONEDNN.exact():
        pytest.skip("this torch has no oneDNN int8 linear, or it is not exact on this CPU")
    monkeypatch.setattr(ONEDNN, "_available", True)
    gen = torch.Generator().manual_seed(0)
    for tokens, width, out in ((300, 384, 1152), (7, 1536, 384), (1, 32, 48), (5, 24, 2)):
        linear = torch.nn.Linear(width, out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(out, width, generator=gen))
        plain, packed = Int8Linear(linear.weight, linear.bias), Int8Linear(linear.weight, linear.bias)
        assert packed.pack() and packed.weight_t is None and packed.packed is not None
        x = torch.randn(tokens, width, generator=gen) * 3
        x[0] = 0.0  # a row of zeros keeps its floor scale
        with torch.no_grad():
            got = packed.run(x)
            torch.testing.assert_close(got, plain.run(x), atol=1e-6, rtol=1e-6)  # one fused multiply-add apart
            assert torch.equal(torch.cat([packed.run(x[i : i + 1]) for i in range(tokens)]), got)
        assert torch.equal(packed.int8(), plain.weight_t) and torch.equal(packed.dequantised(), plain.dequantised())


def test_a_served_int8_base_runs_its_linears_through_onednn(tiny_bert_dir):
    """Where oneDNN's int8 linear is there, every quantised linear of the base serves through its packed weights;
    the fused query/key/value keeps its plain int8 weights too, which its parts view."""
    from composer.injection import FAMILIES
    from composer.quantize import ONEDNN, Int8Sibling

    if not ONEDNN.available():
        pytest.skip("this torch has no oneDNN int8 linear")
    base = load_base(tiny_bert_dir, precision="int8", device="cpu", kernels=False)
    layers = base.model.get_submodule(FAMILIES[base.family].layers_path)
    forms = [m.__dict__["quantised"] for m in layers.modules() if isinstance(m, torch.nn.Linear)]
    siblings = [q for q in forms if isinstance(q, Int8Sibling)]
    alone = [q for q in forms if not isinstance(q, Int8Sibling)]
    assert siblings and alone
    assert all(q.packed is not None and q.weight_t is None for q in alone)
    assert all(q.fused.packed is not None and q.fused.weight_t is not None for q in siblings)


def test_a_slow_onednn_kernel_is_not_chosen_and_the_base_serves_through_int_mm(tiny_bert_dir, monkeypatch):
    """Where oneDNN's int8 linear runs far slower than `torch._int_mm` (its reference kernel, on a CPU it has no
    int8 brgemm kernel for), int8 linears keep their plain weights and run `torch._int_mm`, with its numbers."""
    import time

    from composer import quantize
    from composer.injection import FAMILIES

    def slow() -> None:
        time.sleep(0.02)

    def instant() -> None:
        return None

    assert not quantize.fast(slow, instant) and quantize.fast(instant, slow)
    monkeypatch.setattr(quantize, "fast", lambda candidate, baseline: False)
    monkeypatch.setattr(quantize.ONEDNN, "_available", None)
    monkeypatch.setattr(quantize.ONEDNN, "_exact", True)
    assert not quantize.ONEDNN.available()
    base = load_base(tiny_bert_dir, precision="int8", device="cpu", kernels=False)
    layers = base.model.get_submodule(FAMILIES[base.family].layers_path)
    forms = [m.__dict__["quantised"] for m in layers.modules() if isinstance(m, torch.nn.Linear)]
    linears = [getattr(q, "fused", q) for q in forms]
    assert linears and all(q.packed is None and q.weight_t is not None for q in linears)
    x = torch.randn(5, linears[0].weight_t.shape[0], generator=torch.Generator().manual_seed(0))
    flat_q, amax = quantize.EAGER[0](x)
    want = quantize.EAGER[1](quantize.INT_MM(flat_q, linears[0].weight_t), linears[0].scale, amax, linears[0].bias)
    with torch.no_grad():
        assert torch.equal(linears[0].run(x), want)


_ISA_CHECK = """
import json, torch
from composer.quantize import INT_MM, ONEDNN, Int8Linear, exact
gen = torch.Generator().manual_seed(0)
worst = 0.0
for tokens, width, out in ((16, 256, 64), (3, 384, 1152)):
    w, b, x = torch.randn(out, width, generator=gen), torch.randn(out, generator=gen), torch.randn(tokens, width, generator=gen)
    sx = x.abs().amax(1, keepdim=True) / 127
    plain = Int8Linear(w, b)
    want = (torch.round(x / sx).long() @ plain.weight_t.long()).double() * sx.double() * plain.scale.double() + b.double()
    packed = Int8Linear(w, b)
    packed.pack()
    for q in (plain, packed):
        worst = max(worst, float(((q.run(x).double() - want).abs() / want.abs().max()).max()))
print(json.dumps({"onednn": ONEDNN.available(), "int_mm": exact(torch._int_mm), "worst": worst}))
"""


@pytest.mark.parametrize("isa", ["", "AVX2", "AVX512_CORE"])
def test_int8_products_are_exact_whatever_the_cpu_offers(isa, tmp_path):
    """oneDNN capped at an older instruction set (`ONEDNN_MAX_CPU_ISA`, read when it starts: a process each) runs the
    kernels of CPUs without VNNI, whose int16 pair sums saturate: a kernel that is not exact there is not used, and
    every int8 linear still gives the integer products' numbers."""
    import json
    import os
    import platform
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa} if isa else dict(os.environ)
    done = subprocess.run([sys.executable, "-c", _ISA_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["worst"] < 1e-5, got
    if isa == "AVX2" and platform.machine() in ("x86_64", "AMD64"):
        assert not got["int_mm"] and not got["onednn"], got  # saturates: both kernels are set aside
