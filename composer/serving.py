"""Serving runtime: one resident base per base model, modules loaded on demand into an LRU cache.

The runtime knows nothing of databases: callers hand it loader callables that return
artifacts. All forwards on one base run under that base's lock, since sites are shared.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from composer import artifacts, fusion_artifacts
from composer.artifacts import AdapterArtifact
from composer.base import LoadedBase
from composer.composition import Fuse, Mixed, Single
from composer.data import Collator, Example, TaskSpec
from composer.ensemble import predict_ensemble
from composer.fusion_artifacts import FusionArtifact
from composer.heads import HeadConfig
from composer.model import AdaptedEncoder
from composer.prompt_artifacts import PromptArtifact
from composer.prompt_model import PromptModel
from composer.voting import RowVote


@dataclass
class Resident:
    base: LoadedBase
    encoder: AdaptedEncoder
    prompts: PromptModel
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


def _nbytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


class Runtime:
    def __init__(self, cache_bytes: int = 512 << 20):
        self.residents: dict[str, Resident] = {}
        self.cache: OrderedDict[str, tuple[str, str, int]] = OrderedDict()  # id -> (base key, kind, bytes)
        self.cache_bytes = cache_bytes
        self.stats = CacheStats()
        self.pinned: set[str] = set()
        self._lock = threading.Lock()
        self._load_lock = threading.RLock()  # concurrent requests for one cold module load it once

    def resident(self, base_key: str, load_base: Callable[[], LoadedBase]) -> Resident:
        with self._lock:
            if base_key not in self.residents:
                base = load_base()
                self.residents[base_key] = Resident(base, AdaptedEncoder(base).eval(), PromptModel(base).eval())
            return self.residents[base_key]

    def _touch(self, module_id: str) -> bool:
        if module_id in self.cache:
            self.cache.move_to_end(module_id)
            self.stats.hits += 1
            return True
        self.stats.misses += 1
        return False

    def _admit(self, module_id: str, base_key: str, kind: str, size: int) -> None:
        self.cache[module_id] = (base_key, kind, size)
        while sum(v[2] for v in self.cache.values()) > self.cache_bytes:
            victims = [k for k in self.cache if k not in self.pinned and k != module_id]
            if not victims:
                break
            self.evict(victims[0])

    def evict(self, module_id: str) -> None:
        entry = self.cache.pop(module_id, None)
        if entry is None:
            return
        self.stats.evictions += 1
        res = self.residents[entry[0]]
        with res.lock:
            self._drop(res, module_id)

    @staticmethod
    def _drop(res: Resident, module_id: str) -> None:
        for registry in (
            res.encoder.adapters,
            res.encoder.heads,
            res.encoder.fusions,
            res.prompts.prompts,
            res.prompts.heads,
        ):
            if module_id in registry:
                del registry[module_id]

    def loaded(self) -> list[dict[str, Any]]:
        return [{"id": k, "base": v[0], "kind": v[1], "bytes": v[2]} for k, v in self.cache.items()]

    # -- adapters and fusions -------------------------------------------------------------
    def ensure_adapter(
        self, res: Resident, base_key: str, adapter_id: str, load: Callable[[], AdapterArtifact]
    ) -> None:
        with self._load_lock:
            self._ensure_adapter(res, base_key, adapter_id, load)

    def _ensure_adapter(
        self, res: Resident, base_key: str, adapter_id: str, load: Callable[[], AdapterArtifact]
    ) -> None:
        if self._touch(adapter_id) and adapter_id in res.encoder.adapters:
            return
        artifact = load()
        with res.lock:  # never change the module set under a running forward
            artifacts.attach(res.encoder, artifact, name=adapter_id)
        size = _nbytes(res.encoder.adapters[adapter_id])
        if adapter_id in res.encoder.heads:
            size += _nbytes(res.encoder.heads[adapter_id])
        self._admit(adapter_id, base_key, "adapter", size)

    def ensure_fusion(self, res: Resident, base_key: str, fusion_id: str,
                      load: Callable[[], tuple[FusionArtifact, dict[str, torch.Tensor], HeadConfig]],
                      members: list[tuple[str, Callable[[], AdapterArtifact]]]) -> None:  # fmt: skip
        with self._load_lock:
            for member_id, loader in members:
                self._ensure_adapter(res, base_key, member_id, loader)
            if self._touch(fusion_id) and fusion_id in res.encoder.fusions:
                return
            art, head_tensors, head_cfg = load()
            with res.lock:
                fusion_artifacts.attach(res.encoder, art, member_names=[m for m, _ in members], name=fusion_id)
                res.encoder.add_head(fusion_id, head_cfg).load_state_dict(head_tensors, strict=True)
        self._admit(fusion_id, base_key, "fusion", _nbytes(res.encoder.fusions[fusion_id]))

    def predict(self, res: Resident, module_id: str, task: TaskSpec, inputs: list[Example], fusion: bool = False,
                return_attention: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:  # fmt: skip
        batch = {
            k: v.to(res.base.device)
            for k, v in Collator(res.base.tokenizer, task).__call__(inputs).items()
            if k != "labels"
        }
        with res.lock, torch.no_grad():
            res.encoder.activate(Fuse(module_id) if fusion else Single(module_id))
            out = res.encoder(**batch, head=module_id, return_fusion_attention=return_attention and fusion)
        return out.logits.float().cpu(), out.fusion_attention  # type: ignore[union-attr]

    def predict_mixed(
        self, res: Resident, rows: list[tuple[str, Example]], fusion: str | None = None
    ) -> list[torch.Tensor]:
        """One forward for rows that use different adapters (row i: adapter rows[i][0]), or one fusion.
        Each row's own head is applied to its own output; returns per-row logits."""
        tok = res.base.tokenizer
        texts = [e.text for _, e in rows]
        pairs = [e.text_pair for _, e in rows]
        enc = tok(texts, [p or "" for p in pairs] if any(p is not None for p in pairs) else None,
                  padding=True, truncation=True, max_length=128, return_tensors="pt")  # fmt: skip
        batch = {
            k: v.to(res.base.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        ids = [a for a, _ in rows]
        with res.lock, torch.no_grad():
            res.encoder.activate(Fuse(fusion) if fusion else Mixed(tuple(ids)))
            hidden = res.encoder(**batch).hidden
            out: list[torch.Tensor | None] = [None] * len(rows)
            for head_id in dict.fromkeys(fusion and [fusion] or ids):
                idx = [i for i, a in enumerate(ids) if fusion or a == head_id]
                sel = torch.tensor(idx, device=hidden.device)
                logits = res.encoder.heads[head_id](
                    hidden.index_select(0, sel), batch["attention_mask"].index_select(0, sel)
                )
                for j, i in enumerate(idx):
                    out[i] = logits[j].float().cpu()
        return out  # type: ignore[return-value]

    def pin(self, module_id: str, pinned: bool = True) -> None:
        """Pinned modules are never evicted by the LRU (archiving still evicts them)."""
        (self.pinned.add if pinned else self.pinned.discard)(module_id)

    # -- prompts ----------------------------------------------------------------------------
    def ensure_prompt(self, res: Resident, base_key: str, prompt_id: str, load: Callable[[], PromptArtifact]) -> None:
        with self._load_lock:
            if self._touch(prompt_id) and prompt_id in res.prompts.prompts:
                return
            art = load()
            with res.lock:
                res.prompts.attach(art, name=prompt_id)
        self._admit(
            prompt_id,
            base_key,
            "soft_prompt",
            _nbytes(res.prompts.prompts[prompt_id]) + _nbytes(res.prompts.heads[prompt_id]),
        )

    def predict_ensemble(self, res: Resident, prompt_ids: list[str], task: TaskSpec, inputs: list[Example],
                         strategy: str, scores: list[float | None], early_exit: bool) -> list[RowVote]:  # fmt: skip
        batch = {
            k: v.to(res.base.device) for k, v in Collator(res.base.tokenizer, task)(inputs).items() if k != "labels"
        }
        with res.lock:
            return predict_ensemble(res.prompts, prompt_ids, batch, strategy, scores, early_exit)
