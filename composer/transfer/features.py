"""Pooled features of texts, through the bare base or through one adapter: what the rankers score.

Rows are batched in order of length, so a batch pads to rows of about its own length (ranking runs a
thousand rows through each of tens of adapters, and padding is most of the cost of short texts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from composer.adapter_artifact import AdapterArtifact
from composer.adapter_artifact import build as build_adapter
from composer.base import LoadedBase
from composer.composition import Single
from composer.encoder import AdaptedEncoder

RANK_MAX_LENGTH = 128


class FeatureModel:
    """One encoder on a base, with candidate adapters put on and taken off in turn."""

    def __init__(self, base: LoadedBase, max_length: int = RANK_MAX_LENGTH, batch_size: int = 64):
        self.base = base
        self.model = AdaptedEncoder(base).eval()
        self.max_length = max_length
        self.batch_size = batch_size

    def pooled(self, texts: Sequence[str], art: AdapterArtifact | None = None) -> torch.Tensor:
        """[N, hidden] float32: the last hidden state mean-pooled over each row's tokens, through `art`
        (None: the bare base). The adapter is taken off again before this returns."""
        name = "__rank__"
        if art is not None:
            adapter, _ = build_adapter(self.model, art, share=True)
            self.model.put(name, adapter)
        try:
            return self._pooled(texts, Single(name) if art is not None else None)
        finally:
            self.model.remove(name)

    def _pooled(self, texts: Sequence[str], composition: Single | None) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.base.hidden_size)
        tok = self.base.tokenizer
        with torch.no_grad():
            for i in range(0, len(order), self.batch_size):
                idx = order[i : i + self.batch_size]
                enc = tok(
                    [texts[j] for j in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                batch = {
                    k: v.to(self.base.device)
                    for k, v in enc.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")
                }
                hidden = self.model(**batch, composition=composition).hidden.float()
                mask = batch["attention_mask"].to(hidden.dtype).unsqueeze(-1)
                out[idx] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu()
        return out
