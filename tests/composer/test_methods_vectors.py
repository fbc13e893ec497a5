"""(IA)³ and BitFit: the references' numbers on imports, their definitions, and rows of every linear method in one
forward, each equal to its own run."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import load_base
from composer.composition import BatchSplit, Single
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.presets import preset
from tests.composer.parity import METHODS, PARITY, PEFT_BASE, adapter_logits, add_random, files_in


@pytest.mark.parametrize("tag", ["ia3_peft", "ia3_peft_ff"])
def test_peft_ia3_import_gives_peft_logits(tag):
    ref = load_file(METHODS / "expected.safetensors")[tag]
    files = files_in(METHODS / tag)
    face, source = kinds.detect(files)
    assert (face.name, source) == ("ia3", "peft")
    art = face.import_files(files, str(PEFT_BASE))
    logits = adapter_logits(PEFT_BASE, art)
    model = AdaptedEncoder(load_base(PEFT_BASE, with_tokenizer=False, device="cpu")).eval()
    name = artifacts.attach(model, art)
    x = load_file(PARITY / "inputs.safetensors")
    with torch.no_grad():  # the vectors matter (the tiny pooler damps them in the logits)
        assert (model(**x, composition=Single(name)).hidden - model(**x).hidden).abs().max() > 1e-2
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    art.base = load_base(PEFT_BASE, with_tokenizer=False, device="cpu").identity
    again = kinds.get("ia3").from_files(*kinds.get("ia3").to_files(art))
    assert again.kind == "ia3" and again.config == art.config
    torch.testing.assert_close(adapter_logits(PEFT_BASE, again), logits, atol=0, rtol=0)


def test_peft_ia3_default_reads_which_linears_scale_their_input():
    """PEFT's BERT default `output.dense` also matches `attention.output.dense` by suffix: both scale inputs."""
    art = kinds.load_dir(METHODS / "ia3_peft", base_dir=PEFT_BASE)
    assert set(art.config.target_modules) == {
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "output.dense",
    }
    assert set(art.config.feedforward_modules) == {"attention.output.dense", "output.dense"}
    ff = kinds.load_dir(METHODS / "ia3_peft_ff", base_dir=PEFT_BASE)
    assert ff.config.feedforward_modules == ("intermediate.dense",)


def test_adapterhub_ia3_import_gives_adapterhub_logits():
    ref = load_file(METHODS / "expected.safetensors")["ia3_hub"]
    files = files_in(METHODS / "ia3_hub")
    face, source = kinds.detect(files)
    assert (face.name, source) == ("ia3", "adapterhub")  # not a LoRA: composition_mode "scale"
    art = face.import_files(files, None)
    assert art.config.feedforward_modules == ()
    torch.testing.assert_close(adapter_logits(PARITY / "base", art), ref, atol=1e-5, rtol=0)


def _each_row_as_alone(specs: dict, rows: list[str | None]) -> dict[str, torch.Tensor]:
    """Modules `specs` on the parity base, rows i under rows[i] in one forward: each row equals its own single run
    and each module changes its row. The batch, its mixed and its bare hidden states."""
    model = AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu")).eval()
    add_random(model, specs, 5, 0.2, around_init=True)
    x = load_file(PARITY / "inputs.safetensors")
    batch = {k: v[[i % 3 for i in range(len(rows))]] for k, v in x.items()}
    with torch.no_grad():
        mixed = model(**batch, composition=BatchSplit(tuple(rows))).hidden
        bare = model(**batch).hidden
        for i, name in enumerate(rows):
            row = {k: v[i : i + 1] for k, v in batch.items()}
            alone = model(**row, composition=Single(name) if name else None).hidden
            torch.testing.assert_close(mixed[i : i + 1], alone, atol=1e-5, rtol=1e-4)
            if name is not None:
                assert (alone - bare[i : i + 1]).abs().max() > 1e-3, name  # each module changes its row
    return {"batch": batch, "mixed": mixed, "bare": bare}


def test_rows_of_every_linear_method_share_one_forward():
    specs = {
        "ia": preset("ia3"),
        "ia_out": preset("ia3", target_modules=["query", "output.dense"]),  # output.dense scaled at its output
        "bf": preset("bitfit"),
        "bf_q": preset("bitfit", target_modules=["query", "intermediate.dense"], layers=[1]),
        "lo": preset("lora", r=4),
        "st": preset("seq_bn"),
    }
    got = _each_row_as_alone(specs, ["ia", "bf", "lo", None, "ia_out", "st", "bf_q", "ia", "lo", "bf"])
    plain = AdaptedEncoder(load_base(PARITY / "base", with_tokenizer=False, device="cpu")).eval()
    with torch.no_grad():
        torch.testing.assert_close(got["bare"], plain(**got["batch"]).hidden, atol=0, rtol=0)


@pytest.mark.parametrize("rows", [["ia", "lo_ff", None, "bf", "lo_ff"], ["lo_ff", "bf", "ia", None, "ia"]])
def test_few_runs_scale_a_private_input_in_place_and_leave_other_rows_alone(rows):
    """With few runs of rows, (IA)³ scales its rows of the FFN's activation in place (nothing else reads it);
    a LoRA on that same linear, chained inside or outside it, still reads its own rows unscaled."""
    specs = {"ia": preset("ia3"), "lo_ff": preset("lora", r=4, target_modules=["output.dense"]), "bf": preset("bitfit")}
    _each_row_as_alone(specs, rows)


def _linear_out(model: AdaptedEncoder, name: str, layer: int, linear: str, x: torch.Tensor) -> torch.Tensor:
    lin = model.base.model.encoder.layer[layer].get_submodule(linear)
    with torch.no_grad(), model.router.scoped(model.scope(Single(name))):
        return lin(x)


def test_ia3_and_bitfit_match_their_definitions():
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    model = AdaptedEncoder(base).eval()
    add_random(model, {"ia": preset("ia3"), "bf": preset("bitfit")}, 5, 0.2, around_init=True)
    blocks = base.model.encoder.layer
    x = torch.randn(2, 5, base.hidden_size)
    key, ffn_out = blocks[1].attention.self.key, blocks[0].output.dense
    v_key = model.adapters["ia"].by_target[(1, "attention.self.key")]
    v_ff = model.adapters["ia"].by_target[(0, "output.dense")]
    want = (x @ key.weight.T + key.bias) * v_key
    torch.testing.assert_close(_linear_out(model, "ia", 1, "attention.self.key", x), want, atol=1e-6, rtol=0)
    h = torch.randn(2, 5, ffn_out.in_features)
    want = (h * v_ff) @ ffn_out.weight.T + ffn_out.bias
    torch.testing.assert_close(_linear_out(model, "ia", 0, "output.dense", h), want, atol=1e-6, rtol=0)
    d = model.adapters["bf"].by_target[(1, "attention.self.key")]
    want = x @ key.weight.T + key.bias + d
    torch.testing.assert_close(_linear_out(model, "bf", 1, "attention.self.key", x), want, atol=1e-6, rtol=0)
    # only vectors train: (IA)³ 2·32 + 48 per layer here, BitFit every linear's bias
    assert sum(p.numel() for p in model.adapters["ia"].parameters()) == 2 * (2 * 32 + 48)
    assert sum(p.numel() for p in model.adapters["bf"].parameters()) == 2 * (4 * 32 + 48 + 32)


@pytest.mark.parametrize(
    "name, fields, word",
    [
        ("ia3", {"target_modules": ["gate_proj"]}, "target_modules"),
        ("ia3", {"target_modules": ["key"], "feedforward_modules": ["value"]}, "feedforward_modules"),
        ("ia3", {"feedforward_modules": ["value"]}, "feedforward_modules"),
        ("ia3", {"layers": [5]}, "layers"),
        ("bitfit", {"target_modules": ["c_attn"]}, "target_modules"),
        ("bitfit", {"layers": [-1]}, "layers"),
        ("bitfit", {"bias": "all"}, "unknown"),
    ],
)
def test_bad_configs_name_the_field(name, fields, word):
    base = load_base(PARITY / "base", with_tokenizer=False, device="cpu")
    with pytest.raises(ConfigError, match=word):
        AdaptedEncoder(base).add_adapter("x", preset(name, **fields))


def test_linear_methods_are_not_fusable():
    assert not kinds.get("ia3").fusable and not kinds.get("bitfit").fusable
