"""AdapterHub 1.3 prefix tuning on a tiny RoBERTa, for the positions check (run in the parity venv):

    .venv-parity/bin/python scripts/parity/make_roberta_prefix.py

AdapterHub keeps a prefix inside the attention: the tokens' positions are RoBERTa's own, which start after its
padding index (not at 0). Writes tests/fixtures/parity/roberta/: the base, the adapter as its users hold it
(`pytorch_adapter.bin`), and expected.safetensors (the inputs and each row's logits alone).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity" / "roberta"


def main() -> None:
    from adapters import PrefixTuningConfig, RobertaAdapterModel
    from transformers import RobertaConfig, RobertaModel

    shutil.rmtree(OUT, ignore_errors=True)
    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
    )
    RobertaModel(cfg).save_pretrained(OUT / "base", safe_serialization=True)
    model = RobertaAdapterModel.from_pretrained(OUT / "base").eval()
    model.add_adapter("p", config=PrefixTuningConfig(prefix_length=4, bottleneck_size=16))
    model.add_classification_head("p", num_labels=3)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".p." in name or name.startswith("heads.p."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.set_active_adapters("p")
    model.eval()
    ids = torch.tensor([[0, 7, 9, 11, 4, 2], [0, 8, 12, 2, 1, 1]])
    x = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    with torch.no_grad():
        rows = [
            model(**{k: v[i : i + 1, : int(x["attention_mask"][i].sum())] for k, v in x.items()}).logits
            for i in range(2)
        ]
    model.save_adapter(str(OUT / "prefix_hub"), "p", with_head=True)
    save_file({**x, "rows": torch.cat(rows).contiguous()}, OUT / "expected.safetensors")


if __name__ == "__main__":
    main()
