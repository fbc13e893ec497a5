"""`PromptModel`: K soft prompts (each with its own head) on one frozen base; K prompts run as
one forward of B×K rows, each input replicated K times with a different prompt per replica."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from composer.base import LoadedBase
from composer.errors import ArtifactError, ConfigError, IncompatibleBaseError
from composer.heads import HeadConfig, PredictionHead, stacked_classify
from composer.prompts.artifacts import PromptArtifact
from composer.prompts.prompt import PromptConfig, SoftPrompt, encode_prompted, pool_prompted

PLANS = ("batched", "sequential", "chunked")


def _rows(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows start:stop of a padded batch, cut to their own longest input (right padding)."""
    mask = batch["attention_mask"][start:stop]
    width = max(1, int(mask.sum(1).max()))
    return {k: v[start:stop, :width] for k, v in batch.items()}


class PromptModel(nn.Module):
    def __init__(self, base: LoadedBase):
        super().__init__()
        self.base = base
        self.encoder = base.model
        self.prompts = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.encoder.eval()

    def train(self, mode: bool = True) -> PromptModel:
        super().train(mode)
        self.encoder.eval()  # the frozen base runs without dropout (docs/architecture.md)
        return self

    def add(self, name: str, cfg: PromptConfig, head: HeadConfig) -> None:
        if name in self.prompts:
            raise ConfigError(f"prompt {name!r} already exists")
        dev = self.base.device
        self.prompts[name] = SoftPrompt(cfg, self.base.hidden_size, self.base.num_layers).to(dev).train(self.training)
        self.heads[name] = PredictionHead(head, self.base.hidden_size).to(dev).train(self.training)

    def attach(self, art: PromptArtifact, name: str | None = None) -> str:
        name = name or art.name
        if art.hidden_size != self.base.hidden_size:
            raise IncompatibleBaseError(
                f"prompt {art.name!r} has hidden size {art.hidden_size}, the base {self.base.hidden_size}"
            )
        if art.base is not None:
            self.base.identity.check_same(art.base, what=f"prompt {art.name!r}")
        if art.head is None:
            raise ConfigError(f"prompt {art.name!r} has no head; it cannot classify")
        self.add(name, art.config, art.head)
        try:
            with torch.no_grad():
                target = self.prompts[name].deep if art.config.kind == "deep" else self.prompts[name].embedding
                if target is None or target.shape != art.prompt.shape:
                    raise ConfigError(
                        f"prompt {art.name!r} has shape {tuple(art.prompt.shape)}, which does not fit this base"
                    )
                target.copy_(art.prompt)
            self.heads[name].load_state_dict(art.head_tensors, strict=True)
        except (RuntimeError, ConfigError) as e:
            self.remove(name)
            raise ArtifactError(f"prompt {art.name!r}: weights do not fit its config: {e}") from None
        return name

    def remove(self, name: str) -> None:
        for registry in (self.prompts, self.heads):
            if name in registry:
                del registry[name]

    def check_batchable(self, names: Sequence[str]) -> PromptConfig:
        if not names:
            raise ConfigError("an ensemble needs at least one prompt (K >= 1)")
        missing = [n for n in names if n not in self.prompts]
        if missing:
            raise ConfigError(f"unknown prompts {missing}")
        cfgs = {
            (c.length, c.kind, c.insertion, c.positions)
            for c in (self.prompts[n].cfg for n in names)  # type: ignore[attr-defined]
        }
        if len(cfgs) != 1:
            raise ConfigError("prompts of different lengths or insertion points cannot share one forward")
        return self.prompts[names[0]].cfg

    def logits(
        self, names: Sequence[str], batch: dict[str, torch.Tensor], plan: str = "batched", chunk_rows: int = 32
    ) -> torch.Tensor:
        """[B, K, C] (or [B, K] for regression): every input under every prompt. The plan says how the
        K x B prompted rows are executed, never what they compute: `batched`, one forward of K*B rows;
        `sequential`, K forwards of B rows; `chunked`, forwards of about `chunk_rows` prompted rows, each
        cut to its own longest input (fewer pad tokens)."""
        dev = self.base.device  # inputs follow the model (a batch built on the CPU meets a base on a GPU)
        batch = {k: v.to(dev) for k, v in batch.items()}
        if plan == "batched":
            return self._logits(names, batch)
        if plan == "sequential":
            return torch.cat([self._logits([n], batch) for n in names], dim=1)
        if plan == "chunked":
            b, step = batch["input_ids"].shape[0], max(1, chunk_rows // len(names))
            return torch.cat([self._logits(names, _rows(batch, i, i + step)) for i in range(0, b, step)], dim=0)
        raise ConfigError(f"unknown execution plan {plan!r}; known: {list(PLANS)}")

    def _logits(self, names: Sequence[str], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.check_batchable(names)
        k = len(names)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        b = ids.shape[0]
        tt = batch.get("token_type_ids")
        rep = (lambda t: t.repeat_interleave(k, dim=0)) if k > 1 else (lambda t: t)
        prompts = torch.stack([self.prompts[n].value() for n in names])  # [K, L, H] or [K, layers, 2, L, H]
        ones = [1] * (prompts.dim() - 1)
        prompts = prompts.repeat(b, *ones) if k > 1 else prompts.expand(b, *[-1] * (prompts.dim() - 1))
        hidden = encode_prompted(
            self.base, rep(ids), rep(mask), rep(tt) if tt is not None else None, prompts, cfg.insertion, cfg.positions
        )
        heads = [self.heads[n] for n in names]
        prefix_len = cfg.length if cfg.kind == "shallow" else 0  # deep prompts add no positions to the output
        pooled = pool_prompted(hidden, rep(mask), prefix_len, heads[0].cfg.pooling).view(b, k, -1)
        if self.training:
            pooled = nn.functional.dropout(pooled, heads[0].cfg.dropout)
        return stacked_classify(heads, pooled)  # type: ignore[arg-type]
