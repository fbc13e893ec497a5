"""Generate parity fixtures with the reference implementation (AdapterHub `adapters`).

Run this in its own virtualenv, never in the project's:

    python -m venv .venv-parity
    .venv-parity/bin/pip install torch==2.13.0
    .venv-parity/bin/pip install adapters==1.3.0 transformers==4.57.6 peft
    .venv-parity/bin/python scripts/parity/make_fixtures.py

It writes a tiny BERT (fixed seed), one adapter per bottleneck preset with random
non-zero weights in AdapterHub's own save format, fixed inputs, and the reference
outputs to tests/fixtures/parity/. Only safetensors and JSON are written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import adapters
import torch
from adapters import BertAdapterModel
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "parity"
PRESETS = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn"]


def tiny_config() -> BertConfig:
    return BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        type_vocab_size=2,
    )


def randomise(module: torch.nn.Module, names: list[str], seed: int) -> None:
    """Give every adapter parameter random, non-zero values (init may zero adapter_up)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(f".{n}." in name or name.startswith(f"heads.{n}.") for n in names):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 64, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(3, 10, dtype=torch.long)
    types[0, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def fusion_fixtures(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fuse(...) with the "dynamic" config over 3 adapters, per preset family, in eval mode."""
    from adapters.composition import Fuse

    out: dict[str, torch.Tensor] = {}
    for j, (tag, cfg) in enumerate([("seq_bn", "seq_bn"), ("double_seq_bn", "double_seq_bn")]):
        model = BertModel.from_pretrained(OUT / "base").eval()
        adapters.init(model)
        names = [f"{tag}_f{i}" for i in range(3)]
        for n in names:
            model.add_adapter(n, config=cfg)
        model.add_adapter_fusion(Fuse(*names), "dynamic")
        fusion_name = ",".join(names)
        randomise(model, names, seed=300 + j)
        gen = torch.Generator().manual_seed(400 + j)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "adapter_fusion_layer" in pname:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        model.set_active_adapters(Fuse(*names))
        model.eval()
        with torch.no_grad():
            res = model(**x, output_adapter_fusion_attentions=True)
        out[f"fusion/{tag}"] = res.last_hidden_state
        attn = res.adapter_fusion_attentions[fusion_name]
        for layer, by_loc in attn.items():
            for loc, probs in by_loc.items():
                out[f"fusion_attn/{tag}/{layer}/{loc}"] = torch.from_numpy(probs)
        d = OUT / "fusions" / tag
        d.mkdir(parents=True, exist_ok=True)
        for n in names:
            model.save_adapter(str(d / n), n, use_safetensors=True)
        model.save_adapter_fusion(str(d / "fusion"), fusion_name, use_safetensors=True)
    return out


def fusion_with_head_fixture(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fusion saved the way AdapterHub users ship one: a folder per member (save_adapter) and a folder for
    the fusion with its classification head (save_adapter_fusion(..., with_head=True)); its probabilities."""
    from adapters.composition import Fuse

    model = BertAdapterModel.from_pretrained(OUT / "base").eval()
    names = ["sentiment", "topic", "nli"]
    for n in names:
        model.add_adapter(n, config="seq_bn")
    model.add_adapter_fusion(Fuse(*names), "dynamic")
    fusion_name = ",".join(names)
    model.add_classification_head(fusion_name, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    randomise(model, names, seed=700)
    gen = torch.Generator().manual_seed(701)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "adapter_fusion_layer" in pname:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            elif pname.startswith(f"heads.{fusion_name}."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.set_active_adapters(Fuse(*names))
    model.active_head = fusion_name
    model.eval()
    with torch.no_grad():
        probs = model(**x).logits.softmax(-1)
    d = OUT / "fusions" / "with_head"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        model.save_adapter(str(d / n), n, use_safetensors=True)
    model.save_adapter_fusion(str(d / "fusion"), fusion_name, with_head=True, use_safetensors=True)
    return {"fusion/with_head_probs": probs}


def prompt_fixtures(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """adapters 1.3.0 prompt tuning (hidden states), and a PEFT prompt-tuning classifier (logits)."""
    from adapters import PromptTuningConfig
    from peft import PromptTuningConfig as PeftPromptConfig
    from peft import TaskType, get_peft_model
    from transformers import BertForSequenceClassification

    out: dict[str, torch.Tensor] = {}
    model = BertModel.from_pretrained(OUT / "base").eval()
    adapters.init(model)
    model.add_adapter("prompt", config=PromptTuningConfig(prompt_length=5))
    randomise(model, ["prompt"], seed=500)
    model.set_active_adapters("prompt")
    model.eval()
    with torch.no_grad():
        out["prompt/adapterhub"] = model(**x).last_hidden_state
        # adapters 1.3.0 lets padding change a prompted row's output (its prefix mask is wrong under
        # sdpa); each row alone and unpadded is the reference's correct answer.
        for i in range(x["input_ids"].shape[0]):
            n = int(x["attention_mask"][i].sum())
            row = {k: v[i : i + 1, :n] for k, v in x.items()}
            out[f"prompt/adapterhub_row{i}"] = model(**row).last_hidden_state[0]
    (OUT / "prompts" / "adapterhub").mkdir(parents=True, exist_ok=True)
    model.save_adapter(str(OUT / "prompts" / "adapterhub"), "prompt", use_safetensors=True)

    torch.manual_seed(7)
    clf = BertForSequenceClassification(tiny_config().__class__(**{**tiny_config().to_dict(), "num_labels": 3})).eval()
    clf.save_pretrained(OUT / "prompts" / "peft_base", safe_serialization=True)
    peft_model = get_peft_model(clf, PeftPromptConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=4))
    gen = torch.Generator().manual_seed(501)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    peft_model.eval()
    with torch.no_grad():
        out["prompt/peft_logits"] = peft_model(**x).logits
    peft_model.save_pretrained(str(OUT / "prompts" / "peft"), safe_serialization=True)
    return out


def lora_fixtures(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT LoRA SEQ_CLS classifiers (on prompts/peft_base) and an AdapterHub LoRAConfig adapter with a head."""
    from adapters import LoRAConfig
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertForSequenceClassification

    out: dict[str, torch.Tensor] = {}
    peft_cfgs = {
        "peft_qv": LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8),
        "peft_wide": LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=2,
            lora_alpha=5,
            use_rslora=True,
            target_modules=["query", "key", "value", "dense"],
            layers_to_transform=[1],
        ),
    }
    for j, (tag, cfg) in enumerate(peft_cfgs.items()):
        clf = BertForSequenceClassification.from_pretrained(OUT / "prompts" / "peft_base").eval()
        model = get_peft_model(clf, cfg)
        gen = torch.Generator().manual_seed(600 + j)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        model.eval()
        with torch.no_grad():
            out[f"lora/{tag}"] = model(**x).logits
        model.save_pretrained(str(OUT / "lora" / tag), safe_serialization=True)

    lora = LoRAConfig(r=4, alpha=8, intermediate_lora=True, output_lora=True)
    out["lora/adapterhub"] = adapter_with_head("hub_lora", lora, 650, x, OUT / "lora" / "adapterhub")
    return out


def adapter_with_head(name: str, config, seed: int, x: dict[str, torch.Tensor], directory: Path) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """An AdapterHub adapter with a 3-class classification head, saved the way AdapterHub ships them; its logits."""
    model = BertAdapterModel.from_pretrained(OUT / "base").eval()
    model.add_adapter(name, config=config)
    model.add_classification_head(name, num_labels=3)
    randomise(model, [name], seed=seed)
    model.set_active_adapters(name)
    model.eval()
    with torch.no_grad():
        logits = model(**x).logits
    model.save_adapter(str(directory), name, with_head=True, use_safetensors=True)
    return logits


def main() -> None:
    if OUT.exists():  # everything but exports/ (export_fixtures.py and check_exports.py own that)
        for child in OUT.iterdir():
            if child.name != "exports":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    (OUT / "adapters").mkdir(parents=True)
    torch.manual_seed(0)
    base = BertModel(tiny_config(), add_pooling_layer=False).eval()
    base.save_pretrained(OUT / "base", safe_serialization=True)
    x = inputs()
    save_file(x, str(OUT / "inputs.safetensors"))

    expected: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        expected["base"] = base(**x).last_hidden_state

    for i, preset in enumerate(PRESETS):
        model = BertModel.from_pretrained(OUT / "base").eval()
        adapters.init(model)
        model.add_adapter(preset, config=preset)
        randomise(model, [preset], seed=100 + i)
        model.set_active_adapters(preset)
        model.eval()
        with torch.no_grad():
            expected[f"hidden/{preset}"] = model(**x).last_hidden_state
        model.save_adapter(str(OUT / "adapters" / preset), preset, use_safetensors=True)

    expected["logits/with_head"] = adapter_with_head("with_head", "seq_bn", 7, x, OUT / "adapters" / "with_head")

    expected.update(fusion_fixtures(x))
    expected.update(fusion_with_head_fixture(x))
    expected.update(prompt_fixtures(x))
    expected.update(lora_fixtures(x))
    save_file({k: v.contiguous() for k, v in expected.items()}, str(OUT / "expected.safetensors"))
    meta = {"adapters": adapters.__version__, "torch": torch.__version__, "presets": PRESETS}
    import peft
    import transformers

    meta["transformers"] = transformers.__version__
    meta["peft"] = peft.__version__
    (OUT / "versions.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
