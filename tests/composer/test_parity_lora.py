"""LoRA equals PEFT 0.21 and AdapterHub `adapters` 1.3.0 on the same weights; rows on different LoRAs
(and on bottleneck adapters) in one forward give what each row gives alone; bad LoRAs are refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import kinds
from composer.base import load_base
from composer.composition import BatchSplit, Single
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError, ConfigError
from composer.fusion.modules import FusionConfig
from composer.lora.modules import LoraAdapter, LoraConfig
from composer.presets import preset
from tests.composer.parity import PARITY, PEFT_BASE, adapter_logits, add_random, files_in


@pytest.mark.parametrize("tag", ["peft_qv", "peft_wide"])
def test_peft_lora_seq_cls_import_gives_peft_logits(tag):
    ref = load_file(PARITY / "expected.safetensors")[f"lora/{tag}"]
    files = files_in(PARITY / "lora" / tag)
    face, source = kinds.detect(files)
    assert (face.name, source) == ("lora", "peft")
    art = face.import_files(files, str(PEFT_BASE))
    assert art.kind == "lora" and art.head is not None and art.model_type == "bert"
    logits = adapter_logits(PEFT_BASE, art)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    # our own format round-trips it exactly
    art2 = kinds.get("lora").from_files(*kinds.get("lora").to_files(_bind(art)))
    assert art2.kind == "lora" and art2.config == art.config
    torch.testing.assert_close(adapter_logits(PEFT_BASE, art2), logits, atol=0, rtol=0)


def _bind(art):  # type: ignore[no-untyped-def]
    art.base = load_base(PEFT_BASE, with_tokenizer=False, device="cpu").identity
    return art


def test_peft_wide_config_is_read_field_for_field():
    art = kinds.load_dir(PARITY / "lora" / "peft_wide", base_dir=PEFT_BASE)
    cfg = art.config
    assert isinstance(cfg, LoraConfig) and (cfg.r, cfg.alpha, cfg.use_rslora, cfg.layers) == (2, 5.0, True, (1,))
    # "dense" is the attention output's and the FFN output's and the intermediate's linear, as in PEFT
    assert set(cfg.target_modules) == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }


def test_adapterhub_lora_config_gives_adapterhub_logits():
    ref = load_file(PARITY / "expected.safetensors")["lora/adapterhub"]
    files = files_in(PARITY / "lora" / "adapterhub")
    face, source = kinds.detect(files)
    assert (face.name, source) == ("lora", "adapterhub")
    art = face.import_files(files, None)
    assert set(art.config.target_modules) == {
        "attention.self.query",
        "attention.self.value",
        "intermediate.dense",
        "output.dense",
    }
    torch.testing.assert_close(adapter_logits(PARITY / "base", art), ref, atol=1e-5, rtol=0)


def test_mixed_batch_of_loras_and_bottlenecks_equals_each_row_alone():
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    model = AdaptedEncoder(base).eval()
    specs = {
        "l1": preset("lora", r=4),
        "l2": preset("lora", r=2, target_modules=["query", "key", "value", "dense"]),
        "l3": preset("lora", r=8, alpha=4, layers=[0]),
        "l4": preset("lora", r=4, alpha=3),  # l1's rank and linears: their rows alone gather unpadded
        "b1": preset("seq_bn"),
        "b2": preset("seq_bn", reduction_factor=8),
    }
    add_random(model, specs, 3, 0.2)
    x = load_file(PARITY / "inputs.safetensors")
    for rows in (["l1", "b1", "l2", "l3", None, "b2", "l1", "l4"], ["l1", "l4", None, "b1", "l4"]):
        batch = {k: v[[i % 3 for i in range(len(rows))]] for k, v in x.items()}
        with torch.no_grad():
            mixed = model(**batch, composition=BatchSplit(tuple(rows))).hidden
            for i, name in enumerate(rows):
                row = {k: v[i : i + 1] for k, v in batch.items()}
                alone = model(**row, composition=Single(name) if name else None).hidden
                torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-5, rtol=1e-4)  # float32 reassociation
            bare = model(**batch).hidden
    assert (mixed[0] - bare[0]).abs().max() > 1e-3  # the LoRA changes the output
    # nothing stays behind on the shared layers: the bare base is the bare base again
    plain = AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu")).eval()
    with torch.no_grad():
        torch.testing.assert_close(bare, plain(**batch).hidden, atol=0, rtol=0)


def test_lora_matches_its_definition():
    """One LoRA on the query: the query projection's output moves by x A^T B^T alpha/r, nothing else."""
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    model = AdaptedEncoder(base).eval()
    add_random(model, {"q": preset("lora", r=3, alpha=6, target_modules=["query"], layers=[1])}, 3, 0.2)
    lin = base.model.encoder.layer[1].attention.self.query
    site: LoraAdapter = model.adapters["q"]  # type: ignore[assignment]
    x = torch.randn(2, 5, base.hidden_size)
    seen = {}
    lin.register_forward_hook(lambda _m, a, out: seen.setdefault("out", out))
    with torch.no_grad(), model.router.scoped(model.scope(Single("q"))):
        lin(x)
    want = (
        x @ lin.weight.T
        + lin.bias
        + (x @ site.by_target[(1, "attention.self.query")].A.T @ site.by_target[(1, "attention.self.query")].B.T) * 2.0
    )
    torch.testing.assert_close(seen["out"], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "fields, word",
    [
        ({"r": 0}, "r"),
        ({"r": -2}, "r"),
        ({"target_modules": ["gate_proj"]}, "target_modules"),
        ({"layers": [7]}, "layers"),
        ({"alpha": 0}, "alpha"),
    ],
)
def test_bad_lora_configs_name_the_field(fields, word):
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    with pytest.raises(ConfigError, match=word):
        AdaptedEncoder(base).add_adapter("x", preset("lora", **fields))


def test_bad_peft_artifacts_are_refused(tmp_path):
    files = files_in(PARITY / "lora" / "peft_qv")
    import json

    for field, value in [("r", 0), ("use_dora", True), ("bias", "all"), ("target_modules", ".*query")]:
        cfg = json.loads(files["adapter_config.json"])
        cfg[field] = value
        bad = {**files, "adapter_config.json": json.dumps(cfg).encode()}
        with pytest.raises((ConfigError, ArtifactError), match=field):
            kinds.get("lora").import_files(bad, str(PEFT_BASE))
    pickled = {"adapter_config.json": files["adapter_config.json"], "adapter_model.bin": b"\x80\x04K\x01."}
    with pytest.raises(ArtifactError, match="pickle"):
        kinds.get("lora").import_files(pickled, str(PEFT_BASE))
    # rank in the config disagrees with the weights
    cfg = json.loads(files["adapter_config.json"])
    cfg["r"] = 5
    with pytest.raises(ArtifactError, match="r=5"):
        kinds.get("lora").import_files({**files, "adapter_config.json": json.dumps(cfg).encode()}, str(PEFT_BASE))


def test_lora_is_not_fusable():
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    model = AdaptedEncoder(base)
    model.add_adapter("a", preset("seq_bn"))
    model.add_adapter("l", preset("lora"))
    with pytest.raises(ConfigError, match="LoRA"):
        model.add_fusion("f", ["a", "l"], FusionConfig())
    assert not kinds.get("lora").fusable
