"""Compacter and Compacter++: AdapterHub's numbers on imports, the PHM definition, rows beside ST-As in one
forward, a fusion over Compacters, and the phm_dim check."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.compacter.phm import kron
from composer.composition import BatchSplit, Fuse, Single, Stack
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.fusion.modules import FusionConfig
from composer.presets import preset
from tests.composer.parity import METHODS, PARITY, add_random, files_in


def _model() -> AdaptedEncoder:
    return AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu")).eval()


@pytest.mark.parametrize("tag, placements", [("compacter", 2), ("compacter_pp", 1)])
def test_adapterhub_compacter_import_gives_adapterhub_logits(tag, placements):
    ref = load_file(METHODS / "expected.safetensors")[tag]
    files = files_in(METHODS / tag)
    face, source = kinds.detect(files)
    assert (face.name, source) == ("compacter", "adapterhub")
    art = face.import_files(files, None)
    assert art.config.phm_dim == 4 and len(art.config.placements) == placements
    model = _model()
    name = artifacts.attach(model, art)
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        logits = model(**x, head=name, composition=Single(name)).logits
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    art.base = model.base.identity  # our format round-trips it exactly
    again = kinds.get("compacter").from_files(*kinds.get("compacter").to_files(art))
    assert again.kind == "compacter" and again.config == art.config
    other = _model()
    artifacts.attach(other, again, name=name)
    with torch.no_grad():
        torch.testing.assert_close(other(**x, head=name, composition=Single(name)).logits, logits, atol=0, rtol=0)


def test_phm_projection_is_a_sum_of_kronecker_products():
    model = _model()
    torch.manual_seed(0)
    adapter = model.add_adapter("c", preset("compacter++", reduction_factor=4))
    down = adapter.sites["L0_ffn"].down
    rule = adapter.shared["phm_rule"]
    w = torch.bmm(down.W_left, down.W_right)  # [n, in/n, out/n]
    want = sum(torch.kron(rule[i], w[i]) for i in range(4))  # [in, out]
    torch.testing.assert_close(down.matrix(), want, atol=1e-7, rtol=0)
    torch.testing.assert_close(kron(rule, w).sum(0), want, atol=1e-7, rtol=0)
    assert down.weight.shape == (8, 32) and down.in_features == 32 and down.out_features == 8
    # far fewer parameters than the bottleneck it replaces: 4³ rule + per projection 4·(8+2)+… and biases
    plain = sum(p.numel() for p in model.add_adapter("b", preset("seq_bn", reduction_factor=4)).parameters())
    assert sum(p.numel() for p in adapter.parameters()) < plain / 2


def test_compacter_rows_share_a_forward_with_adapters_and_stack_with_them():
    model = _model()
    add_random(
        model,
        {
            "c": preset("compacter", reduction_factor=4),
            "cpp": preset("compacter++", reduction_factor=4),
            "st": preset("seq_bn"),
            "lo": preset("lora"),
        },
        9,
        0.3,
    )
    x = load_file(PARITY / "inputs.safetensors")
    rows = ["c", "st", "cpp", None, "lo", "c"]
    batch = {k: v[[i % 3 for i in range(len(rows))]] for k, v in x.items()}
    with torch.no_grad():
        mixed = model(**batch, composition=BatchSplit(tuple(rows))).hidden
        for i, name in enumerate(rows):
            row = {k: v[i : i + 1] for k, v in batch.items()}
            alone = model(**row, composition=Single(name) if name else None).hidden
            torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-5, rtol=1e-4)
        stacked = model(**x, composition=Stack("cpp", "st")).hidden  # a Compacter stacks like any bottleneck
        assert (stacked - model(**x, composition=Single("st")).hidden).abs().max() > 1e-3


def test_a_fusion_fuses_compacters_as_the_reference_computes_fuse():
    """Fuse over two Compacters: the fusion's stacked plan (one GEMM for the members' W_down) equals the
    members run one by one and attended as the definition says."""
    model = _model()
    add_random(
        model,
        {"c1": preset("compacter++", reduction_factor=4), "c2": preset("compacter++", reduction_factor=8)},
        9,
        0.3,
    )
    assert kinds.get("compacter").fusable
    fusion = model.add_fusion("f", ["c1", "c2"], FusionConfig())
    with torch.no_grad():
        for p in fusion.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():
        out = model(**x, composition=Fuse("f"), return_fusion_attention=True)
    assert out.fusion_attention and all(a.shape == (3, 2) for a in out.fusion_attention.values())
    # the same fusion over the members' PHM matrices written out as plain bottleneck weights
    plain = _model()
    for n in ("c1", "c2"):
        cfg = preset("seq_bn", reduction_factor=model.adapters[n].cfg.reduction_factor, non_linearity="gelu")
        weights = {}
        for key, site in model.adapters[n].sites.items():
            for proj in ("down", "up"):
                weights[f"sites.{key}.{proj}.weight"] = getattr(site, proj).weight.detach()
                weights[f"sites.{key}.{proj}.bias"] = getattr(site, proj).bias.detach()
        plain.add_adapter(n, cfg, weights)
    plain.add_fusion("f", ["c1", "c2"], FusionConfig()).load_state_dict(fusion.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(**x, composition=Fuse("f")).hidden, out.hidden, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "fields, word",
    [
        ({"phm_dim": 3}, "phm_dim"),  # 3 does not divide 32
        ({"reduction_factor": 8, "phm_dim": 8}, "phm_dim"),  # bottleneck 4
        ({"phm_rank": 0}, "phm_rank"),
        ({"shared_phm_rule": False}, "shared_phm_rule"),
    ],
)
def test_bad_compacter_configs_name_the_field(fields, word):
    with pytest.raises(ConfigError, match=word):
        _model().add_adapter("x", preset("compacter", **{"reduction_factor": 4, **fields}))
