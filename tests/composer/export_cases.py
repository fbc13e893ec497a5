"""Fixed modules, built from seeds, that the export round trip checks: each is exported by our code
(scripts/parity/export_fixtures.py writes tests/fixtures/parity/exports/<case>/), loaded by the reference
in the parity venv (scripts/parity/check_exports.py writes exports/expected.safetensors), and held to
those outputs by tests/composer/test_exports.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from composer import adapter_artifact as artifacts
from composer import kinds
from composer.base import LoadedBase, load_base
from composer.composition import Fuse, Single, fusions, leaves
from composer.compositions.kind import CompositionArtifact
from composer.encoder import AdaptedEncoder
from composer.exporting import Target
from composer.fusion import artifacts as fusion_artifacts
from composer.fusion.modules import FusionConfig
from composer.heads import HeadConfig
from composer.method import Models
from composer.presets import preset
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.model import PromptModel
from composer.prompts.prompt import PromptConfig
from service.compositions import parse
from tests.conftest import FIXTURES

PARITY = FIXTURES / "parity"
EXPORTS = PARITY / "exports"
BASES = {"tiny": PARITY / "base", "peft": PARITY / "prompts" / "peft_base"}


@dataclass
class Case:
    base: str  # key of BASES
    kind: str
    fmt: str
    art: Any
    members: list[Any] = field(default_factory=list)

    def loaded_base(self) -> LoadedBase:
        return load_base(BASES[self.base], with_tokenizer=False, device="cpu")

    def target(self) -> Target:
        base = self.loaded_base()
        return Target(base.identity.name, base.family, base.num_layers, base.model.config.num_attention_heads)

    def export(self) -> dict[str, bytes]:
        return kinds.get(self.kind).export(self.art, self.fmt, self.target(), self.members)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Ours, on a fresh model with only this module."""
        base = self.loaded_base()
        models = Models(base, AdaptedEncoder(base).eval(), PromptModel(base).eval())
        names = [f"m{i}" for i in range(len(self.members))]
        for name, member in zip(names, self.members, strict=True):
            kinds.get(member.kind).attach(models, member, name)
        kinds.get(self.kind).attach(models, self.art, "x", names)
        with torch.no_grad():
            if isinstance(self.art, PromptArtifact):
                return models.prompts.logits(["x"], x)[:, 0]
            comp = Fuse("x") if self.kind == "fusion" else Single("x")
            return models.encoder(**x, head="x", composition=comp).logits


@dataclass
class CompositionCase(Case):
    """A saved composition: its members (in the artifact's export order) run under its tree."""

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        base = self.loaded_base()
        models = Models(base, AdaptedEncoder(base).eval(), PromptModel(base).eval())
        arts = dict(zip(self.art.export_order(), self.members, strict=True))
        for mid, member in arts.items():
            if mid not in self.art.fused:
                kinds.get(member.kind).attach(models, member, mid)
        for fid, names in self.art.fused.items():
            kinds.get("fusion").attach(models, arts[fid], fid, names)
        with torch.no_grad():
            tree = parse(self.art.tree)
            return models.encoder(**x, head=self.art.heads[0], composition=tree).logits


def _composition(tree: dict, head: str, seed: int) -> CompositionCase:
    """Over a fusion of two adapters (ad_alpha, ad_beta: `_fusion`), a domain adapter without a head and a
    task adapter with one (ad_task)."""
    fusion, (alpha, beta) = _fusion(seed)
    mods = {
        "ad_dom": _adapter("tiny", preset("seq_bn"), None, seed + 1),
        "ad_task": _adapter("tiny", preset("seq_bn"), ["x", "y", "z"], seed + 2),
        "ad_f": fusion,
        "ad_alpha": alpha,
        "ad_beta": beta,
    }
    members = list(dict.fromkeys(leaves(parse(tree)) + fusions(parse(tree))))
    fused = {f: ["ad_alpha", "ad_beta"] for f in fusions(parse(tree))}
    art = CompositionArtifact("c", tree, [head], members, fusion.hidden_size, fused=fused)
    return CompositionCase("tiny", "composition", "adapterhub", art, [mods[m] for m in art.export_order()])


def _noise(module: torch.nn.Module, gen: torch.Generator, std: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def _adapter(
    base_key: str, cfg: Any, labels: list[str] | None, seed: int, pooling: str = "cls", around: float = 0.0
) -> Any:
    """A module of `cfg` with noisy weights (at `around`: 1 for scaling vectors) and optionally a head."""
    gen = torch.Generator().manual_seed(seed)
    base = load_base(BASES[base_key], with_tokenizer=False, device="cpu")
    model = AdaptedEncoder(base)
    module = model.add_adapter("a", cfg)
    _noise(module, gen, 0.2)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(around)
    head = None
    if labels:
        head = "a"
        _noise(model.add_head("a", HeadConfig(num_labels=len(labels), pooling=pooling)), gen)  # type: ignore[arg-type]
    return artifacts.extract(model, "a", head=head, labels=labels, max_length=32)


def _fusion(seed: int) -> tuple[Any, list[Any]]:
    torch.manual_seed(seed)  # the fusion's own initialisation, which the noise below perturbs
    gen = torch.Generator().manual_seed(seed)
    base = load_base(BASES["tiny"], with_tokenizer=False, device="cpu")
    model = AdaptedEncoder(base)
    members = []
    for name in ("alpha", "beta"):
        _noise(model.add_adapter(name, preset("seq_bn")), gen, 0.2)
        members.append(artifacts.extract(model, name))
    model.add_fusion("f", ["alpha", "beta"], FusionConfig(dropout=0.0))
    with torch.no_grad():
        for n, p in model.fusions["f"].named_parameters():
            if not n.endswith("prior"):  # AdapterHub's fusion has no member prior
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    _noise(model.add_head("f", HeadConfig(num_labels=3, pooling="cls")), gen)
    return fusion_artifacts.extract(model, "f", head="f", labels=["x", "y", "z"]), members


def _prompt(seed: int, cfg: PromptConfig | None = None, base_key: str = "peft") -> PromptArtifact:
    """A prompt of `cfg` (a collapsed one: plain tensors) with noisy values and a head."""
    cfg = cfg or PromptConfig(length=4)
    gen = torch.Generator().manual_seed(seed)
    base = load_base(BASES[base_key], with_tokenizer=False, device="cpu")
    labels = ["neg", "pos"] if base_key == "peft" else ["a", "b", "c"]
    head = HeadConfig(num_labels=len(labels), pooling="first_token" if base_key == "peft" else "cls")
    holder = PromptModel(base)
    holder.add("p", cfg, head)
    _noise(holder.heads["p"], gen)
    shape = (4, base.hidden_size) if cfg.kind == "shallow" else (base.num_layers, 2, 4, base.hidden_size)
    return PromptArtifact(
        name="p",
        config=cfg,
        hidden_size=base.hidden_size,
        prompt=torch.randn(shape, generator=gen),
        head=head,
        head_tensors={k: v.detach().clone() for k, v in holder.heads["p"].state_dict().items()},
        labels=labels,
        base=base.identity,
    )


def cases() -> dict[str, Case]:
    fusion, members = _fusion(803)
    lora_hub = preset("lora", r=4, alpha=6, target_modules=["query", "value", "intermediate.dense"], layers=[1])
    lora_peft = preset(
        "lora", r=3, alpha=5, use_rslora=True, target_modules=["query", "key", "value", "attention.output.dense"]
    )
    kept = {"L0_attention_self_query": 2, "L0_attention_self_value": 0, "L1_attention_self_query": 1}
    adalora = preset(  # PEFT's alpha and orth_reg_weight, which the checked-in fixture was written with
        "adalora",
        init_r=4,
        target_r=2,
        alpha=8.0,
        orth_reg_weight=0.5,
        rank_pattern={**kept, "L1_attention_self_value": 3},
    )
    ia3_hub = preset("ia3", target_modules=["key", "value", "intermediate.dense"])  # AdapterHub's IA3Config
    return {
        "st_a_adapterhub": Case(
            "tiny", "st_a", "adapterhub", _adapter("tiny", preset("double_seq_bn"), ["a", "b", "c"], 800)
        ),
        "lora_adapterhub": Case("tiny", "lora", "adapterhub", _adapter("tiny", lora_hub, ["a", "b", "c"], 801)),
        "lora_peft": Case("peft", "lora", "peft", _adapter("peft", lora_peft, ["neg", "pos"], 802)),
        "fusion_adapterhub": Case("tiny", "fusion", "adapterhub", fusion, members),
        "ia3_peft": Case("peft", "ia3", "peft", _adapter("peft", preset("ia3"), ["neg", "pos"], 807, around=1.0)),
        "ia3_adapterhub": Case(
            "tiny", "ia3", "adapterhub", _adapter("tiny", ia3_hub, ["a", "b", "c"], 808, around=1.0)
        ),
        "compacter_adapterhub": Case(
            "tiny",
            "compacter",
            "adapterhub",
            _adapter("tiny", preset("compacter", reduction_factor=4), ["a", "b"], 809),
        ),
        "adalora_peft": Case("peft", "adalora", "peft", _adapter("peft", adalora, ["neg", "pos"], 813)),
        "prompt_peft": Case("peft", "soft_prompt", "peft", _prompt(804)),
        "prefix_peft": Case(
            "peft",
            "prefix",
            "peft",
            _prompt(810, PromptConfig(length=4, kind="deep", reparam_hidden=16, collapsed=True)),
        ),
        "prefix_adapterhub": Case(
            "tiny",
            "prefix",
            "adapterhub",
            _prompt(811, PromptConfig(length=4, kind="deep", positions="from_zero"), "tiny"),
        ),
        "p_tuning_peft": Case(
            "peft",
            "p_tuning",
            "peft",
            _prompt(812, PromptConfig(length=4, encoder="lstm", encoder_hidden=16, collapsed=True)),
        ),
        "composition_stack_fuse_adapterhub": _composition({"stack": ["ad_dom", {"fuse": "ad_f"}]}, "ad_f", 805),
        "composition_average_adapterhub": _composition(
            {"stack": ["ad_dom", {"average": ["ad_task", "ad_alpha"], "weights": [0.7, 0.3]}], "head": "ad_task"},
            "ad_task",
            806,
        ),
    }


def write(case: Case, directory: Path) -> None:
    for name, blob in case.export().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
