"""Recipe: train an AdapterFusion (stage two) over frozen adapters, plus attention reports and pruning.

Only the fusion's Q/K/V and the target task's head learn; the base and the member
adapters stay frozen. The loss is the task loss plus λ·Σ‖I − W_V‖²_F.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from composer import adapter_artifact as artifacts
from composer.adapter_artifact import AdapterArtifact
from composer.adapter_training import head_for, predict_logits, score
from composer.base import LoadedBase
from composer.composition import Fuse
from composer.data import Collator, Example, TaskSpec
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.fusion import artifacts as fusion_artifacts
from composer.fusion.artifacts import FusionArtifact
from composer.fusion.modules import FusionConfig
from composer.heads import HeadConfig
from composer.metrics import mcnemar_p
from composer.training import Callback, Objective, TrainConfig, TrainResult, fit


def build_fused_model(
    base: LoadedBase, members: Sequence[AdapterArtifact], fusion_cfg: FusionConfig, name: str = "fusion"
) -> tuple[AdaptedEncoder, list[str]]:
    model = AdaptedEncoder(base)
    names = []
    for i, art in enumerate(members):
        n = artifacts.attach(model, art, name=f"m{i}")
        for p in model.adapters[n].parameters():
            p.requires_grad_(False)
        if n in model.heads:
            del model.heads[n]  # members' own heads play no part in a fusion
        names.append(n)
    model.add_fusion(name, names, fusion_cfg)
    return model, names


def fusion_model(
    base: LoadedBase,
    task: TaskSpec,
    members: Sequence[AdapterArtifact],
    fusion_cfg: FusionConfig,
    name: str = "fusion",
    start: int | None = None,
    head_cfg: HeadConfig | None = None,
) -> AdaptedEncoder:
    """The fused model before training: fresh (uniform attention, a new head), or warm-started on member
    `start` (its head copied, the attention on it, V = I), whose first forward is that adapter's."""
    model, _ = build_fused_model(base, members, fusion_cfg, name)
    if start is None:
        model.add_head(name, head_cfg or head_for(task))
        return model
    own = members[start]
    if own.head is None or (own.labels and list(own.labels) != list(task.labels)):
        raise ConfigError(f"member {start} has no head for task {task.name!r}: it cannot be the warm start")
    head = {k[len("head.") :]: v.clone() for k, v in own.tensors.items() if k.startswith("head.")}
    model.add_head(name, own.head, weights=head)
    model.fusions[name].warm_start(start)
    return model


# a warm fusion replaces its start only if it wins on validation at this significance (one-sided McNemar)
SIGNIFICANCE = 0.05


@dataclass
class FusionRun:
    model: AdaptedEncoder
    name: str
    result: TrainResult
    max_length: int
    learning_rate: float | None = None  # the one a learning-rate grid chose
    # a warm fusion's best epoch against its start on validation: McNemar p, rows gained and lost, kept?
    significance: dict[str, float | int | bool] | None = None

    @property
    def winner(self) -> str:
        """Which evaluation the registered fusion is: an epoch, or its start."""
        sig = self.significance
        if sig is not None and not sig["kept"]:
            return (
                f"none: its best epoch gained {sig['gained']} and lost {sig['lost']} validation rows against its "
                f"start, not significant (McNemar p = {sig['p']:.3f} >= {sig['level']})"
            )
        if self.result.best_step == 0:
            return "none: the fusion did not improve on its start"
        for entry in self.result.history:
            if entry["step"] == self.result.best_step:
                return f"epoch {entry['epoch'] + 1}"
        return "unknown (resumed)"

    def artifact(self, member_ids: list[str], task: TaskSpec) -> FusionArtifact:
        """The fusion and its head; members named by their registry ids."""
        return fusion_artifacts.extract(
            self.model,
            self.name,
            members=member_ids,
            head=self.name,
            labels=list(task.labels),
            metrics=dict(self.result.best_metrics),
            max_length=self.max_length,
        )


def train_fusion(
    base: LoadedBase,
    task: TaskSpec,
    train: Sequence[Example],
    validation: Sequence[Example],
    members: Sequence[AdapterArtifact],
    fusion_cfg: FusionConfig,
    train_cfg: TrainConfig,
    head_cfg: HeadConfig | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bytes | None = None,
    name: str = "fusion",
    start: int | None = None,
    significance: float | None = SIGNIFICANCE,
) -> FusionRun:
    """With `start`, the index of the member that is the target task's own adapter, the fusion starts
    as that adapter: its head is copied and the attention put on it (V stays the identity), so the first
    forward is that adapter's. Validation runs before the first step too, and the best evaluation is
    kept: the registered fusion never scores below its start on validation. A classification fusion
    replaces its start only when its best epoch wins on validation significantly (an exact one-sided
    McNemar test on the rows they disagree on, p < `significance`); else the start is what is kept, so
    that a win of a row or two on a small validation set, which is noise, is not paid for on test.
    `significance=None` keeps the best epoch whatever its margin."""
    torch.manual_seed(train_cfg.seed)
    model = fusion_model(base, task, members, fusion_cfg, name, start, head_cfg)
    model.base_dropout = train_cfg.base_dropout
    fusion = model.fusions[name]
    fused = Fuse(name)
    collate = Collator(base.tokenizer, task, train_cfg.max_length)

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels")
        logits = model(**batch, head=name, composition=fused).logits
        return model.heads[name].loss(logits, labels) + fusion.regularization()

    def evaluate(examples: Sequence[Example]) -> dict[str, float]:
        return score(
            task, predict_logits(model, name, examples, collate, train_cfg.batch_size * 2, composition=fused), examples
        )

    params = {f"fusions.{name}.{k}": p for k, p in fusion.named_parameters()}
    params.update({f"heads.{name}.{k}": p for k, p in model.heads[name].named_parameters()})
    rates = {}
    if start is not None:  # the priors that hold the attention on the start can leave it within an epoch
        rates["*.prior"] = fusion.prior_learning_rate(math.ceil(len(train) / train_cfg.batch_size))
    objective = Objective(
        module=model, params=params, loss=loss, evaluate=evaluate, metric=task.metric, learning_rates=rates
    )
    guard = significance is not None and start is not None and task.kind == "classification" and len(validation) > 0
    if guard:
        gold = torch.tensor([task.label_index(e.label) for e in validation])
        at_start = {k: p.detach().clone() for k, p in params.items()}
        start_right = _correct(model, name, validation, collate, train_cfg, gold)
    result = fit(
        objective,
        train,
        validation,
        collate,
        train_cfg,
        callbacks,
        resume=resume,
        device=model.device,
        evaluate_at_start=True,
    )
    run = FusionRun(model=model, name=name, result=result, max_length=train_cfg.max_length)
    if guard and result.best_step:
        p, gained, lost = mcnemar_p(start_right, _correct(model, name, validation, collate, train_cfg, gold))
        run.significance = {
            "p": round(p, 4),
            "gained": gained,
            "lost": lost,
            "kept": p < significance,
            "level": significance,
        }
        if p >= significance:  # back to the start: its parameters, its validation scores
            with torch.no_grad():
                for k, v in params.items():
                    v.copy_(at_start[k])
            first = result.history[0]
            metrics = {k: v for k, v in first.items() if k not in ("step", "epoch")}
            run.result = dataclasses.replace(result, best_step=0, best_metrics=metrics, best_score=first[task.metric])
    return run


def _correct(model, name, examples, collate, cfg, gold):  # type: ignore[no-untyped-def]
    logits = predict_logits(model, name, examples, collate, cfg.batch_size * 2, composition=Fuse(name))
    return (logits.argmax(-1).cpu() == gold).numpy()


def attention_report(
    model: AdaptedEncoder, fusion: str, examples: Sequence[Example], collate: Collator, batch_size: int = 64
) -> dict[str, object]:
    """Mean attention per member adapter (over sites and examples), per site (layer) too, and each
    example's top adapter."""
    members = model.fusions[fusion].members
    per_site: list[torch.Tensor] = []  # [sites, B, N] per batch
    sites: list[str] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(model.device) for k, v in collate(examples[i : i + batch_size]).items() if k != "labels"}
            out = model(**batch, composition=Fuse(fusion), return_fusion_attention=True)
            sites = list(out.fusion_attention)
            per_site.append(torch.stack(list(out.fusion_attention.values())).cpu())
    att = torch.cat(per_site, dim=1)  # [sites, examples, N]
    per_example = att.mean(0)
    return {
        "members": list(members),
        "mean_attention": [round(float(v), 4) for v in per_example.mean(0)],
        "per_layer": {site: [round(float(v), 4) for v in att[j].mean(0)] for j, site in enumerate(sites)},
        "top_adapter": [members[int(j)] for j in per_example.argmax(-1)],
    }


def pruned(model: AdaptedEncoder, fusion: str, keep: Sequence[str], name: str | None = None) -> str:
    """A derived fusion over `keep` only. Q/K/V do not depend on N, so the weights carry over as they are."""
    source = model.fusions[fusion]
    name = name or f"{fusion}-pruned"
    derived = model.add_fusion(name, list(keep), source.cfg)
    device = next(source.parameters()).device
    kept = torch.tensor([source.members.index(m) for m in keep], device=device)
    state = {k: v[kept] if k.endswith(".prior") else v for k, v in source.state_dict().items()}
    derived.load_state_dict(state)
    if fusion in model.heads:
        model.heads[name] = model.heads[fusion]
    return name


def prune_members(report: dict[str, object], threshold: float) -> list[str]:
    members, mean = report["members"], report["mean_attention"]
    return [m for m, a in zip(members, mean, strict=True) if a >= threshold]  # type: ignore[call-overload]


__all__ = ["FusionArtifact", "FusionRun", "attention_report", "build_fused_model", "pruned", "train_fusion"]
