"""Before a module is registered, it must answer: attach it (after its members) to a throwaway model on
the base, run a probe input through the serving path (the same tokenisation and the same `predict` a
request would take) and check what comes out against the task it is registered for.

An import that attaches but cannot predict (no head, a head for another number of classes, weights
that give NaN) is refused here, before any blob is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from composer.base import LoadedBase
from composer.data import Example
from composer.encoder import AdaptedEncoder
from composer.errors import ArtifactError
from composer.method import Artifact, MethodKind
from composer.prompts.model import PromptModel
from composer.serving import Resident, Runtime

PROBE_TEXTS = ("a probe input", "a second, somewhat longer probe input for the module")
PROBE = "__probe__"


@dataclass(frozen=True)
class Expect:
    """What the registering task expects of a module's output."""

    kind: Literal["classification", "regression"] = "classification"
    num_labels: int | None = None  # classes of a classification task; None: not checked

    @classmethod
    def of(cls, kind: str, labels: Sequence[str] | None) -> Expect:
        """What a task of this kind and these labels expects (a classification task's class count)."""
        return cls(kind, len(labels) if kind == "classification" and labels else None)  # type: ignore[arg-type]


def _batch(res: Resident, limit: int) -> dict[str, torch.Tensor]:
    if res.base.tokenizer is not None:
        return Runtime.tokenize(res, [Example(t) for t in PROBE_TEXTS], [limit] * len(PROBE_TEXTS))
    vocab = int(res.base.model.config.vocab_size)
    ids = torch.arange(2, 2 + 2 * 8).remainder(vocab).reshape(2, 8)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {k: v.to(res.base.device) for k, v in batch.items()}


def check_serves(
    kind: MethodKind,
    art: Artifact,
    base: LoadedBase,
    members: Sequence[tuple[MethodKind, Artifact]] = (),
    expect: Expect | None = None,
) -> None:
    """Attach `art` (after its members, for a fusion) and predict through its head on a probe input.
    A name, shape or base that serving would refuse raises ComposerError from the attach; an output that
    cannot serve the task raises ArtifactError saying why."""
    if art.head is None:
        raise ArtifactError(
            "the module has no head to predict through; save it with its head (AdapterHub: "
            "save_adapter(..., with_head=True); PEFT: a SEQ_CLS model, whose classifier is in modules_to_save)"
        )
    res = Resident(base, AdaptedEncoder(base).eval(), PromptModel(base).eval())
    names = [f"__probe_member_{i}__" for i in range(len(members))]
    for name, (face, member) in zip(names, members, strict=True):
        face.attach(res, member, name)
    kind.attach(res, art, PROBE, names)
    batch = _batch(res, kind.max_length(art, res.token_limit))
    try:
        with torch.no_grad():
            pred = kind.predict(res, [PROBE] * batch["input_ids"].shape[0], batch)
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError) as e:
        raise ArtifactError(f"the module attaches but cannot predict: {type(e).__name__}: {e}") from None
    _check_output(pred.logits, expect or Expect())


def _check_output(logits: Sequence[torch.Tensor], expect: Expect) -> None:
    for row in logits:
        if not torch.isfinite(row).all():
            raise ArtifactError("the module's prediction on a probe input is not finite (NaN or inf weights?)")
        if expect.kind == "regression":
            if row.numel() != 1:
                raise ArtifactError(f"the task is a regression; the module's head answers {row.numel()} values")
        elif row.dim() != 1 or row.numel() < 2:
            raise ArtifactError(
                f"the task is a classification; the module's head answers shape {tuple(row.shape)}, not classes"
            )
        elif expect.num_labels is not None and row.numel() != expect.num_labels:
            raise ArtifactError(
                f"the module's head answers {row.numel()} classes; the task has {expect.num_labels} labels"
            )
