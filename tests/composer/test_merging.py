"""LoRA merges equal PEFT 0.21's `add_weighted_adapter` (scripts/parity/make_merges.py) to 1e-5; merges of
bottleneck parameters equal a plain reference written here; bad requests are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from composer import kinds
from composer.errors import ConfigError
from composer.lora.merge import merge_loras
from composer.merging import combine
from tests.conftest import FIXTURES

MERGES = FIXTURES / "parity" / "merges"
META = json.loads((MERGES / "merges.json").read_text())
EXPECTED = load_file(MERGES / "expected.safetensors")


def members():  # type: ignore[no-untyped-def]
    out = []
    for m in ("m0", "m1", "m2"):
        files = {p.name: p.read_bytes() for p in (MERGES / m).iterdir()}
        out.append(kinds.get("lora").import_files(files, str(FIXTURES / "parity" / "base")))
    return out


@pytest.mark.parametrize("method", META["types"])
def test_lora_merges_equal_peft(method):
    cfg, tensors = merge_loras(members(), META["weights"], method, "bert", META["density"], META["seed"])
    assert cfg.scaling == 1.0
    checked = 0
    for key, want in EXPECTED.items():
        if not key.startswith(f"{method}/") or key.endswith(".scaling"):
            continue
        where, param = key[len(method) + 1 :].rsplit(".", 1)  # layer.0.attention.self.query, A
        layer, name = where[len("layer.") :].split(".", 1)
        got = tensors[f"adapter.sites.L{layer}_{name.replace('.', '_')}.{param}"]
        assert float(EXPECTED[f"{method}/{where}.scaling"]) == 1.0
        if method == "svd":  # a singular vector's sign is free: compare the update BA
            continue
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=key)
        checked += 1
    if method == "svd":
        for key in [k for k in EXPECTED if k.startswith("svd/") and k.endswith(".A")]:
            where = key[4:-2]
            layer, name = where[len("layer.") :].split(".", 1)
            site = f"adapter.sites.L{layer}_{name.replace('.', '_')}"
            got = tensors[f"{site}.B"] @ tensors[f"{site}.A"]
            want = EXPECTED[f"svd/{where}.B"] @ EXPECTED[f"svd/{where}.A"]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            checked += 1
    assert checked >= 4


def test_bottleneck_style_merges_equal_a_plain_reference():
    gen = torch.Generator().manual_seed(3)
    ts = [torch.randn(6, 5, generator=gen) for _ in range(3)]
    w = [0.5, 0.3, 0.2]
    torch.testing.assert_close(combine(ts, w, "linear"), sum(wi * t for wi, t in zip(w, ts, strict=True)))
    # TIES by hand: keep each tensor's top half by magnitude, elect the sign of the summed mass, mean of agreeing
    trimmed = []
    for t in ts:
        k = int(0.5 * t.numel())
        thresh = t.abs().reshape(-1).topk(k).values.min()
        trimmed.append(torch.where(t.abs() >= thresh, t, torch.zeros_like(t)))
    s = torch.stack(trimmed)
    sign = torch.where(s.sum(0) >= 0, 1.0, -1.0)
    agree = (s.sign() == sign).float()
    want = (s * torch.tensor(w).view(-1, 1, 1) * agree).sum(0) / agree.sum(0).clamp(min=1)
    torch.testing.assert_close(combine(ts, w, "ties", density=0.5), want)
    # DARE: the kept values rescaled by 1/density, the same draws for the same seed
    a = combine(ts, w, "dare_linear", 0.5, torch.Generator().manual_seed(11))
    b = combine(ts, w, "dare_linear", 0.5, torch.Generator().manual_seed(11))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, combine(ts, w, "dare_linear", 0.5, torch.Generator().manual_seed(12)))


def test_bad_merges_are_refused():
    ms = members()
    with pytest.raises(ConfigError, match="unknown merge method"):
        merge_loras(ms, [1, 1, 1], "average", "bert")
    with pytest.raises(ConfigError, match="density"):
        combine([torch.ones(2)], [1.0], "ties", density=0)
