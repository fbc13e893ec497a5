"""Load our exports (tests/fixtures/parity/exports/<case>/) in the reference libraries and write their
outputs on the parity inputs to exports/expected.safetensors. Run in the parity venv, after
export_fixtures.py:

    .venv/bin/python scripts/parity/export_fixtures.py
    .venv-parity/bin/python scripts/parity/check_exports.py

tests/composer/test_exports.py then holds our exports and our own outputs to these.
"""

from __future__ import annotations

from pathlib import Path

import torch
from adapters import BertAdapterModel
from adapters.composition import Fuse
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

PARITY = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity"
EXPORTS = PARITY / "exports"


def adapterhub(case: str) -> torch.nn.Module:
    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    name = model.load_adapter(str(EXPORTS / case), set_active=True, use_safetensors=True)
    model.active_head = name
    return model


def adapterhub_fusion(case: str) -> torch.nn.Module:
    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    d = EXPORTS / case
    names = [
        model.load_adapter(str(p), with_head=False, use_safetensors=True)
        for p in sorted(d.iterdir())
        if p.name != "fusion"
    ]
    import json

    order = json.loads((d / "fusion" / "adapter_fusion_config.json").read_text())["adapter_names"]
    assert sorted(order) == sorted(names), (order, names)
    model.load_adapter_fusion(str(d / "fusion"), with_head=True, use_safetensors=True)
    model.set_active_adapters(Fuse(*order))
    model.active_head = ",".join(order)
    return model


def peft(case: str) -> torch.nn.Module:
    clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
    return PeftModel.from_pretrained(clf, str(EXPORTS / case)).eval()


LOADERS = {
    "st_a_adapterhub": adapterhub,
    "lora_adapterhub": adapterhub,
    "fusion_adapterhub": adapterhub_fusion,
    "lora_peft": peft,
    "prompt_peft": peft,
}


def main() -> None:
    x = load_file(PARITY / "inputs.safetensors")
    out = {}
    for case, load in LOADERS.items():
        model = load(case).eval()
        with torch.no_grad():
            out[case] = model(**x).logits.contiguous()
        print(case, tuple(out[case].shape))
    save_file(out, str(EXPORTS / "expected.safetensors"))


if __name__ == "__main__":
    main()
