"""Parity fixtures for the survey methods' kinds: (IA)³ (PEFT 0.21 and AdapterHub 1.3), Compacter (AdapterHub),
AdaLoRA (PEFT). Run it in the parity venv (see README.md); it writes tests/fixtures/parity/methods/ only, on the
tiny BERT and inputs that make_fixtures.py wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

PARITY = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity"
OUT = PARITY / "methods"


def randomise(model: torch.nn.Module, seed: int, scales: str = "") -> None:
    """Every trainable parameter drawn from N(0, 0.3²); those whose name holds `scales` (a method's scaling
    vectors, neutral at 1) from 1 + N(0, 0.5²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                around, scale = (1.0, 0.5) if scales and scales in name else (0.0, 0.3)
                p.copy_(around + torch.randn(p.shape, generator=gen) * scale)


def peft_ia3(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT IA3 SEQ_CLS classifiers: its BERT default, and input scaling on the intermediate linear."""
    from peft import IA3Config, TaskType, get_peft_model

    out = {}
    cfgs = {
        "ia3_peft": IA3Config(task_type=TaskType.SEQ_CLS),
        "ia3_peft_ff": IA3Config(
            task_type=TaskType.SEQ_CLS,
            target_modules=["query", "value", "intermediate.dense"],
            feedforward_modules=["intermediate.dense"],
        ),
    }
    for j, (tag, cfg) in enumerate(cfgs.items()):
        clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
        model = get_peft_model(clf, cfg)
        randomise(model, 800 + j, scales="ia3_l")
        model.eval()
        with torch.no_grad():
            out[tag] = model(**x).logits
        model.save_pretrained(str(OUT / tag), safe_serialization=True)
    return out


def hub_ia3(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AdapterHub's IA3Config (keys, values, the intermediate linear's output; alpha 2) with a head."""
    from adapters import BertAdapterModel, IA3Config

    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    model.add_adapter("hub_ia3", config=IA3Config(alpha=2))
    model.add_classification_head("hub_ia3", num_labels=3)
    gen = torch.Generator().manual_seed(820)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".hub_ia3." in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.5)
    model.set_active_adapters("hub_ia3")
    model.eval()
    with torch.no_grad():
        logits = model(**x).logits
    model.save_adapter(str(OUT / "ia3_hub"), "hub_ia3", with_head=True, use_safetensors=True)
    return {"ia3_hub": logits}


def hub_compacter(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AdapterHub's CompacterConfig and CompacterPlusPlusConfig (reduction 4: the tiny BERT is 32 wide), with
    heads; every parameter, the shared PHM rule included, drawn from N(0, 0.3²)."""
    from adapters import BertAdapterModel, CompacterConfig, CompacterPlusPlusConfig

    out = {}
    for j, (tag, cfg) in enumerate([("compacter", CompacterConfig), ("compacter_pp", CompacterPlusPlusConfig)]):
        model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
        model.add_adapter(tag, config=cfg(reduction_factor=4))
        model.add_classification_head(tag, num_labels=3)
        gen = torch.Generator().manual_seed(840 + j)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if f".{tag}." in name or name.startswith(f"heads.{tag}."):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        model.set_active_adapters(tag)
        model.eval()
        with torch.no_grad():
            out[tag] = model(**x).logits
        model.save_adapter(str(OUT / tag), tag, with_head=True, use_safetensors=True)
    return out


def peft_prompt_family(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT PREFIX_TUNING (through its projection MLP, and flat) and P_TUNING (MLP and LSTM encoders), as SEQ_CLS
    classifiers; saved as PEFT saves them, the encoders collapsed to `prompt_embeddings`."""
    from peft import PrefixTuningConfig, PromptEncoderConfig, TaskType, get_peft_model

    out = {}
    common = {"task_type": TaskType.SEQ_CLS, "num_virtual_tokens": 4}
    cfgs = {
        "prefix_peft": PrefixTuningConfig(**common, prefix_projection=True, encoder_hidden_size=16),
        "prefix_peft_flat": PrefixTuningConfig(**common),
        "ptuning_peft_mlp": PromptEncoderConfig(**common, encoder_hidden_size=16),
        "ptuning_peft_lstm": PromptEncoderConfig(
            **common, encoder_hidden_size=16, encoder_reparameterization_type="LSTM"
        ),
    }
    for j, (tag, cfg) in enumerate(cfgs.items()):
        clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
        model = get_peft_model(clf, cfg)
        randomise(model, 860 + j)
        model.eval()
        with torch.no_grad():
            out[tag] = model(**x).logits
        model.save_pretrained(str(OUT / tag), safe_serialization=True)
    return out


def hub_prefix(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AdapterHub's PrefixTuningConfig (its bottleneck MLP) with a head. adapters 1.3 cannot save prefix tuning as
    safetensors (the pool's tensors are shared), so it goes out as `pytorch_adapter.bin`, as its users hold it."""
    from adapters import BertAdapterModel, PrefixTuningConfig

    model = BertAdapterModel.from_pretrained(PARITY / "base").eval()
    model.add_adapter("hub_prefix", config=PrefixTuningConfig(prefix_length=4, bottleneck_size=16))
    model.add_classification_head("hub_prefix", num_labels=3)
    gen = torch.Generator().manual_seed(880)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".hub_prefix." in name or name.startswith("heads.hub_prefix."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.set_active_adapters("hub_prefix")
    model.eval()
    with torch.no_grad():
        logits = model(**x).logits
        rows = [
            model(**{k: v[i : i + 1, : int(x["attention_mask"][i].sum())] for k, v in x.items()}).logits
            for i in range(3)
        ]
    model.save_adapter(str(OUT / "prefix_hub"), "hub_prefix", with_head=True)
    return {"prefix_hub": logits, "prefix_hub_rows": torch.cat(rows)}


def peft_adalora(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT ADALORA as a SEQ_CLS classifier, trained 12 steps on noise with `update_and_allocate` after each (the
    budget falls from init_r 6 to target_r 2 per matrix), saved pruned to the kept ranks with its rank_pattern;
    the logits are those of the saved model loaded back."""
    from peft import AdaLoraConfig, PeftModel, TaskType, get_peft_model

    clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
    cfg = AdaLoraConfig(
        task_type=TaskType.SEQ_CLS,
        init_r=6,
        target_r=2,
        tinit=2,
        tfinal=4,
        deltaT=2,
        total_step=12,
        lora_alpha=8,
        target_modules=["query", "value", "intermediate.dense"],
    )
    model = get_peft_model(clf, cfg)
    gen = torch.Generator().manual_seed(900)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_E" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    for step in range(12):
        ids = torch.randint(5, 60, (4, 7), generator=gen)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(0, 2, (4,), generator=gen))
        out.loss.backward()
        opt.step()
        model.base_model.update_and_allocate(step)
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        trained = model(**x).logits
    model.save_pretrained(str(OUT / "adalora_peft"), safe_serialization=True)
    clf = BertForSequenceClassification.from_pretrained(PARITY / "prompts" / "peft_base").eval()
    loaded = PeftModel.from_pretrained(clf, str(OUT / "adalora_peft")).eval()
    with torch.no_grad():
        logits = loaded(**x).logits
    return {"adalora_peft": logits, "adalora_peft_trained": trained}


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    x = load_file(str(PARITY / "inputs.safetensors"))
    expected: dict[str, torch.Tensor] = {}
    expected.update(peft_ia3(x))
    expected.update(hub_ia3(x))
    expected.update(hub_compacter(x))
    expected.update(peft_prompt_family(x))
    expected.update(hub_prefix(x))
    expected.update(peft_adalora(x))
    save_file({k: v.contiguous() for k, v in expected.items()}, str(OUT / "expected.safetensors"))
    import adapters
    import peft
    import transformers

    meta = {"adapters": adapters.__version__, "peft": peft.__version__, "transformers": transformers.__version__}
    (OUT / "versions.json").write_text(json.dumps({**meta, "torch": torch.__version__}, indent=2) + "\n")
    print("wrote", OUT, sorted(expected))


if __name__ == "__main__":
    main()
