"""AdapterFusion equals AdapterHub `adapters` 1.3.0 Fuse(...) with the "dynamic" config, in eval mode."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composition import Fuse
from composer.encoder import AdaptedEncoder
from composer.fusion import artifacts as fusion_artifacts
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"


def fused_model(tag: str) -> tuple[AdaptedEncoder, str]:
    model = AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu"))
    art = fusion_artifacts.import_adapterhub_fusion(PARITY / "fusions" / tag / "fusion")
    for member in art.members:
        artifacts.attach(model, kinds.load_dir(PARITY / "fusions" / tag / member))
    name = fusion_artifacts.attach(model, art)
    return model.eval(), name


@pytest.mark.parametrize("tag", ["seq_bn", "double_seq_bn"])
def test_fusion_matches_adapterhub(tag):
    ref = load_file(PARITY / "expected.safetensors")
    x = load_file(PARITY / "inputs.safetensors")
    model, name = fused_model(tag)
    with torch.no_grad():
        out = model(**x, composition=Fuse(name), return_fusion_attention=True)
    expected = ref[f"fusion/{tag}"]
    assert (expected - ref["base"]).abs().max() > 1e-2
    torch.testing.assert_close(out.hidden, expected, atol=1e-5, rtol=0)
    # the attention weights too: token-level from the reference, averaged over valid tokens here
    mask = x["attention_mask"].float().unsqueeze(-1)
    for key, probs in out.fusion_attention.items():
        layer, placement = key[1:].split("_")
        loc = "mh_adapter" if placement == "attention" else "output_adapter"
        theirs = ref[f"fusion_attn/{tag}/{layer}/{loc}"].float()
        torch.testing.assert_close(probs, (theirs * mask).sum(1) / mask.sum(1), atol=1e-5, rtol=0)


def test_fusion_is_stable_across_repeated_forwards():
    """The reference anneals its temperature on every forward, inference included; ours is fixed."""
    x = load_file(PARITY / "inputs.safetensors")
    model, name = fused_model("seq_bn")
    with torch.no_grad():
        first = model(**x, composition=Fuse(name)).hidden
        for _ in range(5):
            again = model(**x, composition=Fuse(name)).hidden
    assert torch.equal(first, again)


def test_fusion_roundtrip_in_our_format_is_exact(tmp_path):
    x = load_file(PARITY / "inputs.safetensors")
    model, name = fused_model("seq_bn")
    with torch.no_grad():
        before = model(**x, composition=Fuse(name)).hidden
    config, weights = fusion_artifacts.to_files(fusion_artifacts.extract(model, name))
    art = fusion_artifacts.from_files(config, weights)
    assert art.head_tensors == {} and art.members == model.fusions[name].members
    fresh = AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu"))
    for member in art.members:
        artifacts.attach(fresh, kinds.load_dir(PARITY / "fusions" / "seq_bn" / member))
    fused = Fuse(fusion_artifacts.attach(fresh, art))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(**x, composition=fused).hidden, before)
