"""Artifact save/load and every refused input: bad configs, wrong bases, corrupt or pickled weights."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.bottleneck.modules import BottleneckConfig
from composer.composition import Single
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError, ConfigError, IncompatibleBaseError
from composer.heads import HeadConfig
from composer.presets import preset
from tests.conftest import FIXTURES


def trained_like_model(base_dir: Path) -> tuple[AdaptedEncoder, str]:
    torch.manual_seed(0)
    model = AdaptedEncoder(load_base(base_dir))
    model.add_adapter("a", preset("double_seq_bn", reduction_factor=4))
    model.add_head("a", HeadConfig(num_labels=3))
    with torch.no_grad():
        for p in model.adapters["a"].parameters():
            p.normal_(0, 0.2)
    return model.eval(), "a"


def logits(model: AdaptedEncoder, base_dir: Path) -> torch.Tensor:
    tok = model.base.tokenizer
    batch = tok(["good movie", "the plot was boring"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch, head="a", composition=Single("a")).logits


def test_save_load_gives_equal_logits(tiny_bert_dir, tmp_path):
    model, name = trained_like_model(tiny_bert_dir)
    expected = logits(model, tiny_bert_dir)
    artifacts.save(artifacts.extract(model, name, head=name), tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert meta["format_version"] == 1 and meta["method"] == "bottleneck" and len(meta["sha256"]) == 64
    assert meta["base"]["fingerprint"] == model.base.identity.fingerprint
    fresh = AdaptedEncoder(load_base(tiny_bert_dir))
    assert artifacts.attach(fresh, kinds.load_dir(tmp_path / "a")) == "a"
    assert torch.equal(logits(fresh.eval(), tiny_bert_dir), expected)


def test_adapter_for_another_base_is_refused(tiny_bert_dir, other_bert_dir, tmp_path):
    model, name = trained_like_model(tiny_bert_dir)
    artifacts.save(artifacts.extract(model, name, head=name), tmp_path / "a")
    other = AdaptedEncoder(load_base(other_bert_dir))
    with pytest.raises(IncompatibleBaseError, match="trained on base"):
        artifacts.attach(other, kinds.load_dir(tmp_path / "a"))
    assert "a" not in other.adapters


def test_hidden_size_mismatch_is_refused(tiny_bert_dir):
    model = AdaptedEncoder(load_base(tiny_bert_dir))
    art = kinds.load_dir(FIXTURES / "parity" / "adapters" / "seq_bn")
    art.hidden_size = 64
    with pytest.raises(IncompatibleBaseError, match="hidden size"):
        artifacts.attach(model, art)


def test_a_two_layer_cut_has_another_identity(tiny_bert_dir):
    assert load_base(tiny_bert_dir).identity != load_base(tiny_bert_dir, num_hidden_layers=1).identity
    assert load_base(tiny_bert_dir).identity == load_base(tiny_bert_dir).identity


@pytest.mark.parametrize(
    "corrupt",
    ["empty", "truncated", "nan", "pickle", "flipped"],
)
def test_corrupt_weights_are_refused(tiny_bert_dir, tmp_path, corrupt):
    model, name = trained_like_model(tiny_bert_dir)
    d = artifacts.save(artifacts.extract(model, name, head=name), tmp_path / "a")
    w = d / "adapter.safetensors"
    data = w.read_bytes()
    if corrupt == "empty":
        w.write_bytes(b"")
    elif corrupt == "truncated":
        w.write_bytes(data[: len(data) // 2])
    elif corrupt == "flipped":
        w.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif corrupt == "pickle":
        w.write_bytes(pickle.dumps({"x": 1}))
    elif corrupt == "nan":
        from safetensors.torch import save_file

        tensors = kinds.load_dir(d).tensors
        first = sorted(tensors)[0]
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        save_file(tensors, str(w))
        meta = json.loads((d / "adapter_config.json").read_text())
        import hashlib

        meta["sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()
        (d / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError):
        kinds.load_dir(d)


def test_adapterhub_pickle_is_refused_with_a_conversion_hint(tmp_path):
    src = FIXTURES / "parity" / "adapters" / "seq_bn"
    d = tmp_path / "hub"
    shutil.copytree(src, d)
    (d / "adapter.safetensors").unlink()
    (d / "pytorch_adapter.bin").write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(ArtifactError, match="convert"):
        kinds.load_dir(d)


def test_failed_save_leaves_no_partial_artifact(tiny_bert_dir, tmp_path, monkeypatch):
    model, name = trained_like_model(tiny_bert_dir)
    art = artifacts.extract(model, name, head=name)
    target = tmp_path / "a"
    artifacts.save(art, target)
    good = (target / "adapter.safetensors").read_bytes()

    def boom(path, data):
        if path.name == "adapter_config.json":
            raise OSError("disk full")
        path.write_bytes(data)

    monkeypatch.setattr(artifacts, "write_file", boom)
    with pytest.raises(OSError, match="disk full"):
        artifacts.save(art, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(OSError):
        artifacts.save(art, target)
    assert (target / "adapter.safetensors").read_bytes() == good  # the previous version is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reduction_factor": 0}, "reduction_factor"),
        ({"reduction_factor": -2}, "reduction_factor"),
        ({"non_linearity": "sparkle"}, "non_linearity"),
        ({"mh_adapter": False, "output_adapter": False}, "placement"),
        ({"dropout": 1.5}, "dropout"),
        ({"scaling": "huge"}, "scaling"),
    ],
)
def test_bad_adapter_configs_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BottleneckConfig(**kwargs)


def test_unknown_preset_and_zero_bottleneck_are_refused(tiny_bert_dir):
    with pytest.raises(ConfigError, match="unknown adapter preset"):
        preset("lora_bn")
    cfg = preset("seq_bn", reduction_factor=64)  # hidden 32 // 64 == 0
    model = AdaptedEncoder(load_base(tiny_bert_dir))
    with pytest.raises(ConfigError, match="bottleneck of size 0"):
        model.add_adapter("z", cfg)
    assert preset("seq_bn", reduction_factor=32).bottleneck_size(32) == 1


def test_non_finite_weights_are_named_in_any_float_dtype_and_empty_tensors_pass():
    from safetensors.torch import save

    from composer.safetensors_io import tensors_from_bytes

    ok = {"a": torch.randn(3, 4), "e": torch.zeros(0), "i": torch.arange(3), "h": torch.randn(5).half()}
    assert set(tensors_from_bytes(save(ok))) == set(ok)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for bad in (float("inf"), float("-inf"), float("nan")):
            weights = {**ok, "z_bad": torch.tensor([0.5, bad, 1.0], dtype=dtype)}
            with pytest.raises(ArtifactError, match="'z_bad' contains NaN or Inf"):
                tensors_from_bytes(save(weights))


def test_modules_built_for_stored_weights_skip_initialising_and_fresh_ones_draw_as_nn_linear_does():
    """Serving builds an adapter and its head on the meta device and gives them their weights: nothing is
    initialised there (no draw from the RNG), and the weights are the stored ones. Built for training, the
    layers initialise as `nn.Linear` does, draw for draw."""
    from composer.bottleneck.modules import BottleneckLayer
    from composer.heads import Linear, PredictionHead

    torch.manual_seed(3)
    want = torch.nn.Linear(8, 4)
    torch.manual_seed(3)
    got = Linear(8, 4)
    torch.testing.assert_close(got.weight, want.weight, atol=0, rtol=0)
    torch.testing.assert_close(got.bias, want.bias, atol=0, rtol=0)

    cfg = preset("seq_bn", reduction_factor=2)
    torch.manual_seed(4)
    layer, head = BottleneckLayer(cfg, 8), PredictionHead(HeadConfig(num_labels=3, layers=2), 8)
    weights = {**layer.state_dict(), **{f"head.{k}": v for k, v in head.state_dict().items()}}
    state = torch.get_rng_state()
    with torch.device("meta"):
        built, built_head = BottleneckLayer(cfg, 8), PredictionHead(HeadConfig(num_labels=3, layers=2), 8)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    built.load_state_dict({k: v for k, v in weights.items() if not k.startswith("head.")}, strict=True, assign=True)
    built_head.load_state_dict(
        {k[5:]: v for k, v in weights.items() if k.startswith("head.")}, strict=True, assign=True
    )
    for a, b in ((built, layer), (built_head, head)):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
