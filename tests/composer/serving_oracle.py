"""The oracle of test_stateless_serving.py: the modules of one tiny base, and single-purpose models built
on freshly loaded bases that have only ever run one module (or only trees)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from composer import adapter_artifact as artifacts
from composer.base import load_base
from composer.composition import Fuse, Single
from composer.encoder import AdaptedEncoder
from composer.fusion import artifacts as fusion_artifacts
from composer.fusion.modules import FusionConfig
from composer.heads import HeadConfig
from composer.presets import preset
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.ensemble import predict_ensemble
from composer.prompts.model import PromptModel
from composer.prompts.prompt import PromptConfig

ADAPTERS, FUSION, PROMPTS, ENSEMBLE = (
    ("s0", "s1", "s2", "l0", "l1", "a0", "i0", "b0", "c0", "d0"),
    "f",
    ("p0", "p1", "p2", "deep", "hub", "zero", "pt"),
    ("p0", "p1", "p2"),
)
ADALORA_KEPT = {"L0_attention_self_query": 1, "L0_attention_self_value": 3, "L1_attention_self_value": 2}
TREE_LEAVES = ("s0", "s1", "s2")  # the bottleneck adapters (s2 has sites the others lack: Stacks only)


def _noise(module: torch.nn.Module, std: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


def build_modules(base_dir: Path, seed: int) -> dict[str, object]:
    """Three ST-As (two of one layout, one of another), two LoRAs, an (IA)³, a BitFit and a Compacter, a fusion
    over the first two ST-As with its head, and five
    soft prompts: three shallow ones for the ensemble, a deep one, one prepended to the embedding output, a prefix
    whose positions start from zero, and a P-tuning prompt."""
    gen = torch.Generator().manual_seed(seed)
    base = load_base(base_dir)
    model = AdaptedEncoder(base)
    arts: dict[str, object] = {}
    layouts = {
        "s0": (preset("seq_bn", reduction_factor=4), 2),
        "s1": (preset("seq_bn", reduction_factor=8), 3),
        "s2": (preset("double_seq_bn", reduction_factor=4), 2),
        "l0": (preset("lora", r=4), 2),
        "l1": (preset("lora", r=2, target_modules=["query", "key", "value", "dense"]), 3),
        # an AdaLoRA saved pruned: a rank per linear, one that kept nothing
        "a0": (preset("adalora", init_r=3, target_r=2, rank_pattern={**ADALORA_KEPT, "L1_attention_self_query": 0}), 2),
        "i0": (preset("ia3"), 2),  # scales the FFN's inner activation (input) and keys and values (output)
        "b0": (preset("bitfit", layers=[1]), 3),
        "c0": (preset("compacter++", reduction_factor=4), 2),
        "d0": (preset("diff"), 2),  # trained form: a dense gated delta (the saved, sparse form is in test_methods_diff)
    }
    for name, (cfg, labels) in layouts.items():
        model.add_adapter(name, cfg)
        model.add_head(name, HeadConfig(num_labels=labels, pooling="mean"))
        _noise(model.adapters[name], 0.3, gen)
        _noise(model.heads[name], 0.3, gen)
        arts[name] = artifacts.extract(model, name, head=name)
    model.add_fusion(FUSION, ["s0", "s1"], FusionConfig(dropout=0.0))
    model.add_head(FUSION, HeadConfig(num_labels=2, pooling="cls"))
    _noise(model.fusions[FUSION], 0.2, gen)
    _noise(model.heads[FUSION], 0.3, gen)
    arts[FUSION] = fusion_artifacts.extract(model, FUSION, head=FUSION)
    h, layers = base.hidden_size, base.num_layers
    head = HeadConfig(num_labels=2, layers=1, pooling="mean")
    shapes = {
        "p0": (PromptConfig(length=4), (4, h)),
        "p1": (PromptConfig(length=4), (4, h)),
        "p2": (PromptConfig(length=4), (4, h)),
        "deep": (PromptConfig(length=3, kind="deep"), (layers, 2, 3, h)),
        "hub": (PromptConfig(length=2, insertion="embedding_output"), (2, h)),
        # a prefix with positions from zero (AdapterHub's), and a P-tuning prompt (its LSTM collapsed)
        "zero": (PromptConfig(length=2, kind="deep", positions="from_zero"), (layers, 2, 2, h)),
        "pt": (PromptConfig(length=3, encoder="lstm", encoder_hidden=8, collapsed=True), (3, h)),
    }
    for name, (cfg, shape) in shapes.items():
        heads = PromptModel(base)
        heads.add(name, cfg, head)
        _noise(heads.heads[name], 0.5, gen)
        tensors = {k: v.detach().clone() for k, v in heads.heads[name].state_dict().items()}
        arts[name] = PromptArtifact(
            name=name,
            config=cfg,
            hidden_size=h,
            prompt=torch.randn(shape, generator=gen),
            head=head,
            head_tensors=tensors,
            labels=["neg", "pos"],
            base=base.identity,
            metrics={"accuracy": float(torch.rand(1, generator=gen))},
        )
    return arts


@dataclass
class Oracle:
    """Single-purpose models on freshly loaded bases, one per module, built on first use."""

    base_dir: Path
    arts: dict[str, object]
    models: dict[str, object] = field(default_factory=dict)

    def _model(self, name: str):  # type: ignore[no-untyped-def]
        if name not in self.models:
            base = load_base(self.base_dir)
            if name in PROMPTS or name == "ensemble":
                model = PromptModel(base).eval()
                for p in ENSEMBLE if name == "ensemble" else (name,):
                    model.attach(self.arts[p], name=p)  # type: ignore[arg-type]
            else:
                model = AdaptedEncoder(base).eval()
                if name == FUSION:
                    for m in ("s0", "s1"):
                        artifacts.attach(model, self.arts[m], name=m)  # type: ignore[arg-type]
                    fusion_artifacts.attach(model, self.arts[name], ["s0", "s1"], name=name)  # type: ignore[arg-type]
                else:
                    artifacts.attach(model, self.arts[name], name=name)  # type: ignore[arg-type]
            self.models[name] = model
        return self.models[name]

    def logits(self, name: str, text: str) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        model = self._model(name)
        batch = model.base.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            if isinstance(model, PromptModel):
                return model.logits([name], dict(batch))[0, 0], None
            comp = Fuse(name) if name == FUSION else Single(name)
            out = model(**batch, head=name, composition=comp, return_fusion_attention=name == FUSION)
            att = {k: v[0] for k, v in out.fusion_attention.items()} if out.fusion_attention else None
            return out.logits[0], att

    def tree(self, tree, head: str, text: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
        """A model that has only ever run composition trees, over every bottleneck adapter and the fusion."""
        if "trees" not in self.models:
            model = AdaptedEncoder(load_base(self.base_dir)).eval()
            for m in TREE_LEAVES:
                artifacts.attach(model, self.arts[m], name=m)  # type: ignore[arg-type]
            fusion_artifacts.attach(model, self.arts[FUSION], ["s0", "s1"], name=FUSION)  # type: ignore[arg-type]
            self.models["trees"] = model
        model = self.models["trees"]
        batch = model.base.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            return model(**batch, head=head, composition=Single(tree) if isinstance(tree, str) else tree).logits[0]

    def ensemble(self, texts: list[str], voting: str, scores: list[float], early_exit: bool):  # type: ignore[no-untyped-def]
        model = self._model("ensemble")
        batch = dict(model.base.tokenizer(texts, padding=True, return_tensors="pt"))
        return predict_ensemble(model, list(ENSEMBLE), batch, voting, scores, early_exit)
