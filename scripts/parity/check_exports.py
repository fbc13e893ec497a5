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
from adapters.composition import Average, Fuse, Stack
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


def hub_setup(node, fusions):  # type: ignore[no-untyped-def]
    """composition.json's setup as adapters 1.3.0's blocks."""
    if isinstance(node, str):
        return node
    if "fuse" in node:
        return Fuse(*fusions[node["fuse"]])
    if "stack" in node:
        return Stack(*[hub_setup(c, fusions) for c in node["stack"]])
    children = [hub_setup(c, fusions) for c in node["average"]]
    return Average(*children, weights=node["weights"], normalize_weights=node["normalize_weights"])


def adapterhub_composition(case: str) -> torch.nn.Module:
    """A composition export: its adapters and fusions loaded from their folders, the setup activated."""
    import json

    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    d = EXPORTS / case
    setup = json.loads((d / "composition.json").read_text())
    head = setup["active_head"]
    for name in setup["adapters"]:
        model.load_adapter(str(d / name), load_as=name, with_head=name == head, use_safetensors=True)
    for fusion, members in setup["fusions"].items():
        for m in members:
            if m not in model.adapters_config:
                model.load_adapter(str(d / fusion / m), load_as=m, with_head=False, use_safetensors=True)
        model.load_adapter_fusion(str(d / fusion / "fusion"), with_head=True, use_safetensors=True)
    model.set_active_adapters(hub_setup(setup["setup"], setup["fusions"]))
    model.active_head = head
    return model


def peft(case: str) -> torch.nn.Module:
    clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
    return PeftModel.from_pretrained(clf, str(EXPORTS / case)).eval()


LOADERS = {
    "st_a_adapterhub": adapterhub,
    "lora_adapterhub": adapterhub,
    "fusion_adapterhub": adapterhub_fusion,
    "lora_peft": peft,
    "ia3_peft": peft,
    "ia3_adapterhub": adapterhub,
    "compacter_adapterhub": adapterhub,
    "adalora_peft": peft,
    "prompt_peft": peft,
    "prefix_peft": peft,
    "prefix_adapterhub": adapterhub,
    "p_tuning_peft": peft,
    "composition_stack_fuse_adapterhub": adapterhub_composition,
    "composition_average_adapterhub": adapterhub_composition,
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
