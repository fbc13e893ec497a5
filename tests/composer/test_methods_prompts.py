"""Prefix tuning and P-tuning: the references' numbers on imports (PEFT PREFIX_TUNING and P_TUNING, AdapterHub
prefix tuning read from its pickle with weights_only=True), where the positions start, and the pickles refused."""

from __future__ import annotations

import dataclasses
import io
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from composer import kinds
from composer.base import load_base
from composer.errors import ArtifactError, ConfigError
from composer.prompts.model import PromptModel
from tests.composer.parity import METHODS, PARITY, PEFT_BASE, files_in

CASES = {  # fixture: (kind, source, base, the config it imports as)
    "prefix_peft": ("prefix", "peft", PEFT_BASE, {"kind": "deep", "reparam_hidden": 16, "collapsed": True}),
    "prefix_peft_flat": ("prefix", "peft", PEFT_BASE, {"kind": "deep", "reparam_hidden": 0, "collapsed": False}),
    "ptuning_peft_mlp": ("p_tuning", "peft", PEFT_BASE, {"encoder": "mlp", "encoder_hidden": 16}),
    "ptuning_peft_lstm": ("p_tuning", "peft", PEFT_BASE, {"encoder": "lstm", "encoder_hidden": 16}),
    "prefix_hub": ("prefix", "adapterhub", PARITY / "base", {"kind": "deep", "positions": "from_zero"}),
}


def _logits(base_dir, art) -> torch.Tensor:  # type: ignore[no-untyped-def]
    model = PromptModel(load_base(base_dir, with_tokenizer=False, device="cpu")).eval()
    name = model.attach(art)
    with torch.no_grad():
        return model.logits([name], load_file(PARITY / "inputs.safetensors"))[:, 0]


@pytest.mark.parametrize("tag", list(CASES))
def test_import_gives_the_references_logits_and_round_trips(tag):
    kind, source, base_dir, fields = CASES[tag]
    ref = load_file(METHODS / "expected.safetensors")[tag]
    files = files_in(METHODS / tag)
    face, found = kinds.detect(files)
    assert (face.name, found) == (kind, source)
    art = kinds.load_files(files, base_dir)
    assert art.kind == kind and {k: getattr(art.config, k) for k in fields} == fields
    assert ref.abs().max() > 0.1
    logits = _logits(base_dir, art)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=0)
    art.base = load_base(base_dir, with_tokenizer=False, device="cpu").identity
    again = face.import_files(dict(zip(face.file_names, face.to_files(art), strict=True)), None)
    assert again.kind == kind and again.config == art.config
    torch.testing.assert_close(_logits(base_dir, again), logits, atol=0, rtol=0)


def test_adapterhub_prefix_positions_start_from_zero_and_padding_does_not_leak():
    """AdapterHub adds the prefix inside the attention: the same prefix with PEFT's positions (after the prefix)
    answers differently. Each padded row equals the reference run on that row alone."""
    ref = load_file(METHODS / "expected.safetensors")
    art = kinds.load_dir(METHODS / "prefix_hub")
    shifted = dataclasses.replace(art, config=dataclasses.replace(art.config, positions="after_prefix"))
    assert (_logits(PARITY / "base", shifted) - ref["prefix_hub"]).abs().max() > 1e-3
    torch.testing.assert_close(_logits(PARITY / "base", art), ref["prefix_hub_rows"], atol=1e-5, rtol=0)


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['BOOM']).write_text('ran')",))


@pytest.mark.parametrize("how", ["raw-pickle", "torch-save-zip"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, monkeypatch, how):
    marker = tmp_path / "ran"
    monkeypatch.setenv("BOOM", str(marker))
    if how == "raw-pickle":
        blob = pickle.dumps({"x": _Boom()})
    else:
        buf = io.BytesIO()
        torch.save({"x": _Boom()}, buf)
        blob = buf.getvalue()
    files = files_in(METHODS / "prefix_hub")
    files["pytorch_adapter.bin"] = blob
    with pytest.raises(ArtifactError, match="weights_only=True|refused") as err:
        kinds.load_files(files)
    assert not marker.exists()
    assert "adapter.safetensors" in str(err.value)  # it says how to convert


def test_only_a_prefix_may_bring_pickles():
    """A bottleneck adapter's pytorch_adapter.bin stays refused, even a harmless one."""
    files = files_in(PARITY / "adapters" / "seq_bn")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    files["pytorch_adapter.bin"] = buf.getvalue()
    with pytest.raises(ArtifactError, match="pickle and is refused for a st_a"):
        kinds.load_files(files)


def test_bad_prompt_family_imports_name_the_field():
    files = files_in(METHODS / "prefix_peft")
    cfg = files["adapter_config.json"].replace(b'"num_layers": 2', b'"num_layers": 3')
    with pytest.raises(ArtifactError, match="does not fit 3 layers"):
        kinds.load_files({**files, "adapter_config.json": cfg}, PEFT_BASE)
    files = files_in(METHODS / "ptuning_peft_mlp")
    cfg = files["adapter_config.json"].replace(b'"MLP"', b'"GRU"')
    with pytest.raises(ConfigError, match="encoder_reparameterization_type"):
        kinds.load_files({**files, "adapter_config.json": cfg}, PEFT_BASE)
    with pytest.raises(ConfigError, match="positions"):  # a PEFT prefix cannot download as AdapterHub's
        art = kinds.load_files(files_in(METHODS / "prefix_peft"), PEFT_BASE)
        base = load_base(PEFT_BASE, with_tokenizer=False, device="cpu")
        from composer.exporting import Target

        kinds.get("prefix").export(art, "adapterhub", Target("b", "bert", base.num_layers, 4))


def test_a_prefix_too_long_for_the_positions_is_refused(tiny_bert_dir):
    """PEFT's prefix takes positions in front of the input: serving truncates inputs to leave them room."""
    art = kinds.load_files(files_in(METHODS / "prefix_peft"), PEFT_BASE)
    face = kinds.get("prefix")
    assert face.max_length(art, 512) == 512 - art.config.length
    hub = kinds.load_dir(METHODS / "prefix_hub")
    assert face.max_length(hub, 512) == 512


def test_archive_with_adapterhubs_prefix_pickles_passes_the_archive_gate():
    from api.archives import read_zip

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in files_in(METHODS / "prefix_hub").items():
            zf.writestr(f"prefix_hub/{name}", blob)
        zf.writestr("prefix_hub/optimizer.pt", b"x")
    from api.errors import Problem

    with pytest.raises(Problem, match="optimizer.pt is a pickle"):
        read_zip(buf.getvalue(), 1 << 30)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in files_in(METHODS / "prefix_hub").items():
            zf.writestr(f"prefix_hub/{name}", blob)
    files = read_zip(buf.getvalue(), 1 << 30)
    art = kinds.load_files({k.rpartition("/")[2]: v for k, v in files.items()})
    assert art.kind == "prefix"


def test_adapterhub_prefix_on_roberta_keeps_robertas_positions():
    """AdapterHub keeps a prefix inside the attention, so the tokens' positions are RoBERTa's own, after its
    padding index (they once started at 0 here, 1.3 off). The import gives AdapterHub's logits for each row alone
    (scripts/parity/make_roberta_prefix.py), and so in a mixed forward beside a LoRA row (composer.rows)."""
    from composer.encoder import AdaptedEncoder
    from composer.heads import HeadConfig
    from composer.method import Models
    from composer.presets import preset
    from composer.rows import predict_rows

    d = PARITY / "roberta"
    ref = load_file(d / "expected.safetensors")
    art = kinds.load_dir(d / "prefix_hub", d / "base")
    assert (art.kind, art.config.positions) == ("prefix", "from_zero")
    base = load_base(d / "base", with_tokenizer=False, device="cpu")
    prompts, enc = PromptModel(base).eval(), AdaptedEncoder(base).eval()
    name = prompts.attach(art)
    enc.add_adapter("l", preset("lora", r=2))
    enc.add_head("l", HeadConfig(num_labels=2))
    x = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    with torch.no_grad():
        for i in range(2):
            alone = {k: v[i : i + 1, : int(x["attention_mask"][i].sum())] for k, v in x.items()}
            torch.testing.assert_close(prompts.logits([name], alone)[0, 0], ref["rows"][i], atol=1e-5, rtol=0)
        rows = {k: v[[0, 1, 1]] for k, v in x.items()}
        mixed = predict_rows(Models(base=base, encoder=enc, prompts=prompts), [name, "l", name], rows).logits
    torch.testing.assert_close(torch.stack([mixed[0], mixed[2]]), ref["rows"], atol=1e-5, rtol=0)
