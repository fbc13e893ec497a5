"""PEFT 0.21's `add_weighted_adapter` on three LoRAs of one base (tests/composer/test_merging.py holds our
merges to it). Run in the parity venv (README.md here):

    .venv-parity/bin/python scripts/parity/make_merges.py

Writes tests/fixtures/parity/merges/: the three members as PEFT saves them (m0/, m1/, m2/) and, per
combination type, the merged adapter's lora_A and lora_B per target (`<type>/<module>.A|B`). DARE's
random drops draw from torch's generator seeded with SEED just before its first draw (PEFT seeds nothing itself,
and initialising the new adapter draws first), then in PEFT's order: per linear, A's members, then B's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer, LoraModel
from safetensors.torch import save_file
from transformers import BertModel

PARITY = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity"
OUT = PARITY / "merges"
WEIGHTS, DENSITY, SEED = [0.5, 0.3, 0.2], 0.5, 7
TYPES = ["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune", "cat", "svd"]


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    base = BertModel.from_pretrained(PARITY / "base").eval()
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])
    model = get_peft_model(base, cfg, adapter_name="m0")
    model.add_adapter("m1", cfg)
    model.add_adapter("m2", cfg)
    gen = torch.Generator().manual_seed(1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for m in ("m0", "m1", "m2"):
        tmp = OUT / f"_{m}"
        model.save_pretrained(str(tmp), selected_adapters=[m], safe_serialization=True)
        saved = next(p.parent for p in tmp.rglob("adapter_config.json"))
        shutil.copytree(saved, OUT / m)
        shutil.rmtree(tmp)
    merge = LoraModel._generalized_task_arithmetic_weighted_adapter
    first = {"done": False}

    def seeded(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not first["done"]:
            torch.manual_seed(SEED)
            first["done"] = True
        return merge(self, *args, **kwargs)

    LoraModel._generalized_task_arithmetic_weighted_adapter = seeded
    out: dict[str, torch.Tensor] = {}
    for t in TYPES:
        first["done"] = False
        model.add_weighted_adapter(["m0", "m1", "m2"], WEIGHTS, f"merged_{t}", combination_type=t, density=DENSITY)
        for key, module in model.named_modules():
            if isinstance(module, LoraLayer) and f"merged_{t}" in module.lora_A:
                where = key.split("encoder.", 1)[1]
                out[f"{t}/{where}.A"] = module.lora_A[f"merged_{t}"].weight.detach().clone()
                out[f"{t}/{where}.B"] = module.lora_B[f"merged_{t}"].weight.detach().clone()
                out[f"{t}/{where}.scaling"] = torch.tensor(module.scaling[f"merged_{t}"])
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT / "expected.safetensors"))
    (OUT / "merges.json").write_text(
        json.dumps({"weights": WEIGHTS, "density": DENSITY, "seed": SEED, "types": TYPES}) + "\n"
    )
    print("wrote", OUT, len(out))


if __name__ == "__main__":
    main()
