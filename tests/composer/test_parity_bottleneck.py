"""Bottleneck adapters equal AdapterHub `adapters` 1.3.0 on the same weights (fixtures from scripts/parity)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"
PRESETS = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn"]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(PARITY / "expected.safetensors")


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return load_file(PARITY / "inputs.safetensors")


def fresh_model() -> AdaptedEncoder:
    return AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu"))


def test_plain_base_matches_reference(reference, inputs):
    model = fresh_model()
    with torch.no_grad():
        hidden = model(**inputs).hidden
    torch.testing.assert_close(hidden, reference["base"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_matches_adapterhub(preset, reference, inputs):
    model = fresh_model()
    art = kinds.load_dir(PARITY / "adapters" / preset)
    name = artifacts.attach(model, art)
    model.eval()
    with torch.no_grad():
        hidden = model(**inputs, composition=Single(name)).hidden
    expected = reference[f"hidden/{preset}"]
    # the adapter must matter, so that this comparison can fail
    assert (expected - reference["base"]).abs().max() > 1e-2
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=0)


def test_head_matches_adapterhub(reference, inputs):
    model = fresh_model()
    name = artifacts.attach(model, kinds.load_dir(PARITY / "adapters" / "with_head"))
    model.eval()
    with torch.no_grad():
        logits = model(**inputs, head=name, composition=Single(name)).logits
    torch.testing.assert_close(logits, reference["logits/with_head"], atol=1e-5, rtol=0)


def test_reexport_roundtrip_is_exact(tmp_path, inputs):
    """Imported -> saved in our format -> loaded gives bit-identical outputs."""
    model = fresh_model()
    name = artifacts.attach(model, kinds.load_dir(PARITY / "adapters" / "double_seq_bn"))
    model.eval()
    with torch.no_grad():
        before = model(**inputs, composition=Single(name)).hidden
    artifacts.save(artifacts.extract(model, name), tmp_path / "ours")
    model2 = fresh_model()
    name2 = artifacts.attach(model2, kinds.load_dir(tmp_path / "ours"))
    model2.eval()
    with torch.no_grad():
        after = model2(**inputs, composition=Single(name2)).hidden
    assert torch.equal(before, after)
