"""The fusion layouts AdapterHub users really write, with the reference's probabilities.

Run in the parity virtualenv (see README.md here), after make_fixtures.py:

    .venv-parity/bin/python scripts/parity/make_layouts.py

Writes tests/fixtures/parity/layouts/: each folder is one archive as `save_adapter` (a folder per member)
and `save_adapter_fusion` (a folder `fusion/`) lay it out; `expected.safetensors` holds the reference's
probabilities for the layouts that serve: on the fixed inputs (`<tag>`), and on the token ids of four
texts (`text/<layout>`, from layouts_inputs.json, as the tests' tokenizer writes them) for every layout of
the import table, these and the older fixtures alike, loaded back from their saved folders.

- head_in_member: the head is saved with its target member (`save_adapter(..., with_head=True)`, the head
  named after it), the fusion without one; AdapterHub serves the fusion through that active head.
- head_in_both: the fusion saved with its own head and a member with another; the fusion's head serves.
- two_member_heads: two members saved with heads, the fusion without: which one is meant is not clear.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from adapters import BertAdapterModel
from adapters.composition import Fuse
from safetensors.torch import load_file, save_file

PARITY = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity"
OUT = PARITY / "layouts"
LABELS = {0: "neg", 1: "neu", 2: "pos"}


def build(seed: int, heads: list[str], fusion_head: bool) -> tuple[BertAdapterModel, str, list[str]]:
    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    names = ["sentiment", "topic", "nli"]
    for n in names:
        model.add_adapter(n, config="seq_bn")
    model.add_adapter_fusion(Fuse(*names), "dynamic")
    fusion = ",".join(names)
    for h in heads:
        model.add_classification_head(h, num_labels=3, id2label=LABELS)
    if fusion_head:
        model.add_classification_head(fusion, num_labels=3, id2label=LABELS)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if any(f".{n}." in pname for n in names) and "adapter_fusion_layer" not in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif "adapter_fusion_layer" in pname:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            elif pname.startswith("heads."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.set_active_adapters(Fuse(*names))
    return model, fusion, names


def save(model: BertAdapterModel, tag: str, fusion: str, names: list[str], heads: list[str], fusion_head: bool) -> None:
    d = OUT / tag
    d.mkdir(parents=True)
    for n in names:
        model.save_adapter(str(d / n), n, with_head=n in heads, use_safetensors=True)
    model.save_adapter_fusion(str(d / "fusion"), fusion, with_head=fusion_head, use_safetensors=True)


def _ids() -> dict[str, torch.Tensor]:
    raw = json.loads((PARITY / "layouts_inputs.json").read_text())
    return {k: torch.tensor(raw[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _adapterhub(folder: Path) -> torch.Tensor:
    """An archive loaded back the way a user of `adapters` loads it: each member, the fusion, the head."""
    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    fusion_dir = folder / "fusion"
    if not fusion_dir.is_dir():
        name = model.load_adapter(str(folder), with_head=True, use_safetensors=True)
        model.set_active_adapters(name)
        model.active_head = name
    else:
        names = []
        for d in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "fusion"):
            names.append(model.load_adapter(str(d), with_head=(d / "head_config.json").exists(), use_safetensors=True))
        cfg = json.loads((fusion_dir / "adapter_fusion_config.json").read_text())
        order = cfg["adapter_names"]
        with_head = (fusion_dir / "head_config.json").exists()
        model.load_adapter_fusion(str(fusion_dir), with_head=with_head, use_safetensors=True)
        model.set_active_adapters(Fuse(*order))
        model.active_head = ",".join(order) if with_head else next(n for n in names if n in model.heads)
    model.eval()
    with torch.no_grad():
        return model(**_ids()).logits.softmax(-1).contiguous()


def _peft(folder: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
    model = PeftModel.from_pretrained(clf, str(folder)).eval()
    with torch.no_grad():
        return model(**_ids()).logits.softmax(-1).contiguous()


def text_probs() -> dict[str, torch.Tensor]:
    out = {}
    for rel in ("adapters/with_head", "lora/adapterhub", "fusions/with_head"):
        out[f"text/{rel}"] = _adapterhub(PARITY / rel)
    for tag in ("head_in_member", "head_in_both"):
        out[f"text/layouts/{tag}"] = _adapterhub(OUT / tag)
    for rel in ("lora/peft_qv", "lora/peft_wide", "prompts/peft"):
        out[f"text/{rel}"] = _peft(PARITY / rel)
    return out


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    x = load_file(str(PARITY / "inputs.safetensors"))
    expected: dict[str, torch.Tensor] = {}
    cases = [  # tag, seed, members saved with a head, fusion saved with its head, the active head
        ("head_in_member", 800, ["sentiment"], False, "sentiment"),
        ("head_in_both", 810, ["topic"], True, None),
        ("two_member_heads", 820, ["sentiment", "topic"], False, None),
    ]
    for tag, seed, heads, fusion_head, active in cases:
        model, fusion, names = build(seed, heads, fusion_head)
        if fusion_head or active:
            model.active_head = active or fusion
            model.eval()
            with torch.no_grad():
                expected[tag] = model(**x).logits.softmax(-1).contiguous()
        save(model, tag, fusion, names, heads, fusion_head)
    expected.update(text_probs())
    save_file(expected, str(OUT / "expected.safetensors"))
    print("wrote", OUT, sorted(expected))


if __name__ == "__main__":
    main()
