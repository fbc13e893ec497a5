"""Exports in AdapterHub's and PEFT's layouts: the files our exporter writes are the ones the reference
libraries loaded in the parity venv (scripts/parity/check_exports.py), and the reference's outputs
on them, checked in, equal ours to 1e-5. Our importers read the exports back to the same module."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file

from composer import kinds
from composer.errors import ConfigError
from composer.exporting import Target
from tests.composer.export_cases import EXPORTS, PARITY, cases

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_is_what_the_reference_loaded_and_gives_its_logits(name):
    case = CASES[name]
    files = case.export()
    on_disk = {p.relative_to(EXPORTS / name).as_posix(): p for p in (EXPORTS / name).rglob("*") if p.is_file()}
    assert set(files) == set(on_disk)
    for path, blob in files.items():
        if path.endswith(".json"):
            assert json.loads(blob) == json.loads(on_disk[path].read_bytes()), path
        else:
            want = load_file(on_disk[path])
            got = load_bytes(blob)
            assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), path
    x = load_file(PARITY / "inputs.safetensors")
    ref = load_file(EXPORTS / "expected.safetensors")[name]
    torch.testing.assert_close(case.logits(x), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name",
    [
        "st_a_adapterhub",
        "lora_adapterhub",
        "lora_peft",
        "prompt_peft",
        "ia3_peft",
        "ia3_adapterhub",
        "compacter_adapterhub",
    ],
)
def test_an_export_imports_back_to_the_same_module(name):
    case = CASES[name]
    files = case.export()
    face, source = kinds.detect(files)
    assert face.name == case.kind and source == case.fmt
    back = face.import_files(files, None)
    mine = {k: v for k, v in case.art.tensors.items()} if hasattr(case.art, "tensors") else {"prompt": case.art.prompt}
    theirs = {k: v for k, v in back.tensors.items()} if hasattr(back, "tensors") else {"prompt": back.prompt}
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_what_a_format_cannot_hold_is_refused_naming_the_field():
    st_a, lora, prompt = CASES["st_a_adapterhub"], CASES["lora_adapterhub"], CASES["prompt_peft"]
    with pytest.raises(ConfigError, match="format"):
        kinds.get("st_a").export(st_a.art, "peft", st_a.target())
    with pytest.raises(ConfigError, match="format"):
        kinds.get("soft_prompt").export(prompt.art, "adapterhub", prompt.target())
    wide = CASES["lora_peft"]
    with pytest.raises(ConfigError, match="target_modules"):
        kinds.get("lora").export(wide.art, "adapterhub", wide.target())
    import dataclasses

    mean = dataclasses.replace(lora.art, head=dataclasses.replace(lora.art.head, pooling="mean"))
    with pytest.raises(ConfigError, match="with_head"):
        kinds.get("lora").export(mean, "adapterhub", lora.target())
    headless = kinds.get("lora").export(mean, "adapterhub", lora.target(), with_head=False)
    assert "head_config.json" not in headless
    with pytest.raises(ConfigError, match="format"):
        kinds.get("st_a").export(st_a.art, "adapterhub", Target("d", "distilbert", 2))
