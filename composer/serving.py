"""Serving runtime: one resident base per base model, modules loaded on demand into an LRU cache.

The runtime knows nothing of databases: callers hand it a kind's face (`composer.kinds`)
and a loader that returns the artifact. Every forward passes its composition as an
argument (`composer.injection.Scope`), so any number of request kinds run on one resident
base, from any thread, in any order, with the outputs of a freshly built model. The
resident's lock only guards changes to the set of loaded modules.

A module is *leased* from `ensure` until `release`: the LRU never evicts a leased module,
and an eviction asked for while it is leased (an archive, say) happens at its release.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from composer.base import LoadedBase
from composer.data import Example
from composer.encoder import AdaptedEncoder
from composer.errors import ConfigError
from composer.method import Artifact, MethodKind, Models, Prediction, module_bytes
from composer.planner import PlanChooser, bucket
from composer.prompts.ensemble import RowVote, predict_ensemble
from composer.prompts.model import PLANS, PromptModel
from composer.tiers import Tier

Loader = Callable[[], Artifact]


@dataclass
class Resident(Models):
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token_limit(self) -> int:
        """The longest input the base takes (its position table, or the tokenizer's own limit)."""
        return self.base.token_limit


@dataclass
class Loaded:
    base_key: str
    kind: MethodKind
    nbytes: int
    max_length: int
    serves: bool = True  # it has a head to predict through (a fusion's headless member does not)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    host_hits: int = 0  # misses served from the host tier (no blob fetch)
    per_module: Counter[tuple[str, str]] = field(default_factory=Counter)  # (module id, "hits"/"misses")


@dataclass
class RowOutput:
    logits: torch.Tensor
    attention: dict[str, torch.Tensor] | None = None  # fusion attention per site, [N]


class Runtime:
    """Two tiers, as S-LoRA keeps adapters in host memory and moves them to the device on demand: the
    *resident* tier (modules attached to a base, `cache_bytes`) and the *host* tier (their artifacts,
    already fetched and checked, `host_bytes`). The LRU evicts from the resident tier only, so an
    evicted module comes back with an attach, without the blob store; archiving forgets both."""

    def __init__(self, cache_bytes: int = 512 << 20, host_bytes: int | None = None, precision: str = "fp32"):
        self.precision = precision  # what its bases serve at ("fp32", "int8"): the loader is told
        self.residents: dict[str, Resident] = {}
        self.cache = Tier(lambda e: e.nbytes)  # module id -> Loaded
        self.cache_bytes = cache_bytes
        self.stats = CacheStats()
        self.pinned: set[str] = set()
        self.leases: Counter[str] = Counter()
        self.doomed: set[str] = set()  # evictions asked for while leased
        # archived modules: a request that read the registry before the archive may still load one; it is
        # served, then detached when released, never kept
        self.retired: set[str] = set()
        self.loading: dict[str, threading.Event] = {}  # modules being loaded, outside the lock
        # artifacts, their bytes and (once evicted) their built modules off the device, LRU
        self.host = Tier(lambda e: e[1])  # module id -> (artifact, bytes, built modules or None)
        self.host_bytes = 4 * cache_bytes if host_bytes is None else host_bytes
        self.ensemble_plans = PlanChooser(PLANS)  # batched, sequential or chunked, by measurement per shape
        self.row_plans: dict[tuple[str, ...], PlanChooser] = {}  # per kind's plans (a mixed batch's, `rows`)
        # the latest cold loads (fetch + attach): seconds, and whether the module came from the host tier
        self.load_seconds: deque[tuple[float, bool]] = deque(maxlen=4096)
        self._lock = threading.RLock()  # the cache and leases; concurrent requests for a cold module load it once

    def resident(self, base_key: str, load_base: Callable[[], LoadedBase]) -> Resident:
        with self._lock:
            if base_key not in self.residents:
                base = load_base()
                self.residents[base_key] = Resident(base, AdaptedEncoder(base).eval(), PromptModel(base).eval())
            return self.residents[base_key]

    # -- loading, leases and eviction -----------------------------------------------------------
    def ensure(
        self,
        res: Resident,
        base_key: str,
        module_id: str,
        kind: MethodKind,
        load: Loader,
        members: Sequence[tuple[str, MethodKind, Loader]] = (),
    ) -> None:
        """Load the module (after its members) if needed, and lease it and its members until `release`.

        A cold module is loaded outside the runtime's lock: requests for other modules keep being
        served meanwhile, and concurrent first requests for the same module wait for one load."""
        leased: list[str] = []
        try:
            for member_id, member_kind, member_load in members:
                self._lease(res, base_key, member_id, member_kind, member_load, ())
                leased.append(member_id)
            self._lease(res, base_key, module_id, kind, load, [m[0] for m in members])
        except BaseException:
            with self._lock:
                for i in leased:
                    self._unlease(i)
            raise
        with self._lock:
            self._shrink()

    def lease_loaded(self, base_key: str, module_id: str, members: Sequence[str] = ()) -> Resident | None:
        """Lease a module and its members if all of them are attached to `base_key`'s resident already (no load,
        no wait: cheap enough for an event loop); None when any is not, or is archived or being evicted (then
        `ensure`). Counted as hits, as `ensure` counts them."""
        ids = (*members, module_id)
        with self._lock:
            res = self.residents.get(base_key)
            if res is None or any(i not in self.cache or i in self.retired or i in self.doomed for i in ids):
                return None
            for i in ids:
                self._hit(i)
            return res

    def _hit(self, module_id: str) -> None:
        """A loaded module leased (under the lock): most recently used, counted as a hit."""
        self.cache.move_to_end(module_id)
        self.stats.hits += 1
        self.stats.per_module[(module_id, "hits")] += 1
        self.leases[module_id] += 1

    def release(self, module_id: str, members: Sequence[str] = ()) -> None:
        with self._lock:
            for i in (module_id, *members):
                self._unlease(i)
            self._shrink()

    def _unlease(self, module_id: str) -> None:
        self.leases[module_id] -= 1
        if self.leases[module_id] <= 0:
            del self.leases[module_id]
            if module_id in self.doomed:
                self.evict(module_id)

    def _lease(
        self, res: Resident, base_key: str, module_id: str, kind: MethodKind, load: Loader, members: Sequence[str]
    ) -> None:
        """Lease a loaded module, or load it once (the first caller loads; the others wait for it)."""
        while True:
            with self._lock:
                if module_id in self.cache:
                    self._hit(module_id)
                    return
                pending = self.loading.get(module_id)
                if pending is None:
                    pending = self.loading[module_id] = threading.Event()
                    self.stats.misses += 1
                    self.stats.per_module[(module_id, "misses")] += 1
                    break
            pending.wait()  # another request is loading it; then it is in the cache (or that load failed)
        loaded = False
        try:
            t0 = time.perf_counter()
            with self._lock:
                kept = self.host.pop(module_id, None)
            art = kept[0] if kept is not None else load()
            if kept is not None:
                self.stats.host_hits += 1
            # built before (the host tier), or built now outside the resident's lock; attached under it
            held = kept[2] if kept is not None and kept[2] is not None else kind.build(res, art, module_id)
            with res.lock:
                if held is not None:
                    kind.reattach(res, module_id, held)
                else:
                    kind.attach(res, art, module_id, members)
            entry = Loaded(
                base_key,
                kind,
                kind.nbytes(res, module_id),
                kind.max_length(art, res.token_limit),
                serves=art.head is not None,
            )
            with self._lock:
                self.cache[module_id] = entry
                self.leases[module_id] += 1
                if module_id in self.retired:
                    self.doomed.add(module_id)
                self.load_seconds.append((time.perf_counter() - t0, kept is not None))
                self._keep(module_id, art, entry.nbytes)
            loaded = True
        finally:
            with self._lock:
                self.loading.pop(module_id).set()
                if not loaded:
                    self.doomed.discard(module_id)

    def prefetch(self, res: Resident, module_id: str, kind: MethodKind, load: Loader) -> bool:
        """Fetch and build a module into the host tier ahead of its first request (S-LoRA keeps every adapter
        in host memory), behind the modules requests have used; a module already loaded or held is left as
        it is. False: the host tier is full. Only kinds that are kept built (`prefetchable`) are asked."""
        with self._lock:
            if self._host_full():
                return False
            if module_id in self.cache or module_id in self.host or module_id in self.loading:
                return True
        art = load()
        held = kind.build(res, art, module_id)
        if held is None:
            return True
        nbytes = module_bytes(*held)
        with self._lock:
            if self._host_full():
                return False
            if module_id not in self.cache and module_id not in self.host and module_id not in self.retired:
                self.host[module_id] = (art, nbytes, held)
                self.host.move_to_end(module_id, last=False)  # the first to go when requests need the room
        return True

    def _host_full(self) -> bool:
        return self.host.total >= self.host_bytes

    def _keep(self, module_id: str, art: Artifact, nbytes: int) -> None:
        """Keep an artifact in the host tier (most recent last), within its budget."""
        self.host[module_id] = (art, nbytes, None)
        self.host.move_to_end(module_id)
        while self.host.total > self.host_bytes and len(self.host) > 1:
            self.host.popitem(last=False)

    def _shrink(self) -> None:
        while self.cache.total > self.cache_bytes:
            victim = next((k for k in self.cache if k not in self.pinned and k not in self.leases), None)
            if victim is None:
                break
            self.evict(victim, forget=False)

    def evict(self, module_id: str, forget: bool = True) -> None:
        """Detach a module (when no request holds it). `forget` (an archive) drops its artifact too; the LRU
        keeps it in the host tier."""
        with self._lock:
            if forget:
                self.host.pop(module_id, None)
            if module_id in self.leases or module_id in self.loading:
                self.doomed.add(module_id)  # evicted when the last request holding it (or loading it) is done
                return
            self.doomed.discard(module_id)
            entry = self.cache.pop(module_id, None)
            if entry is None:
                return
            self.stats.evictions += 1
            res = self.residents[entry.base_key]
            with res.lock:
                if module_id in self.host:  # keep the built module with its artifact: a reload is an attach
                    art, nbytes, _ = self.host[module_id]
                    self.host[module_id] = (art, nbytes, entry.kind.detach(res, module_id))
                else:
                    entry.kind.remove(res, module_id)

    def retire(self, module_id: str) -> None:
        """An archived module: evicted now (or when its last request is done), and a load that a request
        started before the archive serves that request only."""
        with self._lock:
            self.retired.add(module_id)
        self.evict(module_id)

    def unretire(self, module_id: str) -> None:
        """A restored module: it may be leased and kept again."""
        with self._lock:
            self.retired.discard(module_id)

    def pin(self, module_id: str, pinned: bool = True) -> None:
        """Pinned modules are never evicted by the LRU (archiving still evicts them)."""
        (self.pinned.add if pinned else self.pinned.discard)(module_id)

    def max_length(self, module_id: str) -> int:
        """Where a leased module's inputs are truncated."""
        return self._entry(module_id).max_length

    def serves(self, module_id: str) -> bool:
        """Whether a leased module can answer a request on its own: it has a head."""
        with self._lock:
            return self._entry(module_id).serves

    def loaded(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"id": k, "base": v.base_key, "kind": v.kind.name, "bytes": v.nbytes} for k, v in self.cache.items()
            ]

    def _entry(self, module_id: str) -> Loaded:
        entry = self.cache.get(module_id)
        if entry is None:
            raise ConfigError(f"module {module_id!r} is not loaded; ensure() it first")
        return entry

    # -- running ----------------------------------------------------------------------------------
    @staticmethod
    def tokenize(res: Resident, inputs: Sequence[Example], max_lengths: Sequence[int]) -> dict[str, torch.Tensor]:
        """One padded batch, each row truncated at its own module's max_length."""
        tok = res.base.tokenizer
        texts, pairs = [e.text for e in inputs], [e.text_pair for e in inputs]
        pair_args = [p or "" for p in pairs] if any(p is not None for p in pairs) else None
        keys = ("input_ids", "attention_mask", "token_type_ids")
        if len(set(max_lengths)) == 1:
            enc = tok(texts, pair_args, padding=True, truncation=True, max_length=max_lengths[0], return_tensors="pt")
        else:
            rows: list[dict[str, list[int]]] = [{}] * len(inputs)
            for length in set(max_lengths):
                idx = [i for i, m in enumerate(max_lengths) if m == length]
                sub = tok(
                    [texts[i] for i in idx],
                    [pair_args[i] for i in idx] if pair_args else None,
                    truncation=True,
                    max_length=length,
                )
                for j, i in enumerate(idx):
                    rows[i] = {k: sub[k][j] for k in keys if k in sub}
            enc = tok.pad(rows, return_tensors="pt")
        return {k: v.to(res.base.device) for k, v in enc.items() if k in keys}

    def predict(
        self, res: Resident, rows: Sequence[tuple[str, Example]], return_attention: bool = False
    ) -> list[RowOutput]:
        """Rows for any loaded modules of this base, row i under module rows[i][0]. Rows whose modules share a
        group (all bottleneck adapters; one fusion; one prompt) run as one forward each."""
        entries = [self._entry(m) for m, _ in rows]
        groups: dict[tuple[str, str], list[int]] = {}
        for i, ((module_id, _), entry) in enumerate(zip(rows, entries, strict=True)):
            groups.setdefault(entry.kind.group(module_id), []).append(i)
        out: list[RowOutput | None] = [None] * len(rows)
        # inference mode: no view or version tracking on a mixed batch's small ops (docs/architecture.md)
        with torch.inference_mode():
            for idx in groups.values():
                kind = entries[idx[0]].kind
                batch = self.tokenize(res, [rows[i][1] for i in idx], [entries[i].max_length for i in idx])
                pred = self._predict_group(res, kind, [rows[i][0] for i in idx], batch, return_attention)
                for j, i in enumerate(idx):
                    att = {k: a[j].float().cpu() for k, a in pred.attention.items()} if pred.attention else None
                    out[i] = RowOutput(pred.logits[j], att)
        return out  # type: ignore[return-value]

    def _predict_group(
        self, res: Resident, kind: MethodKind, names: list[str], batch: dict[str, torch.Tensor], attention: bool
    ) -> Prediction:
        """One group's rows, under the plan measured fastest for their shape where the kind has plans."""
        shape = kind.plan_key(res, names) if kind.plans else None
        if shape is None:
            return kind.predict(res, names, batch, attention)
        chooser = self.row_plans.setdefault(kind.plans, PlanChooser(kind.plans))
        key = (shape, bucket(batch["input_ids"].shape[0]), bucket(batch["input_ids"].shape[1]))
        plan = chooser.choose(key)
        t0 = time.perf_counter()
        pred = kind.predict_planned(res, names, batch, plan)
        chooser.record(key, plan, time.perf_counter() - t0)
        return pred

    def predict_ensemble(
        self,
        res: Resident,
        prompt_ids: list[str],
        inputs: Sequence[Example],
        voting: str,
        scores: list[float | None],
        early_exit: bool,
    ) -> list[RowVote]:
        entries = [self._entry(p) for p in prompt_ids]
        if any(not e.kind.ensemble_member for e in entries):
            raise ConfigError("an ensemble is made of soft prompts only")
        batch = self.tokenize(res, inputs, [min(e.max_length for e in entries)] * len(inputs))
        b, t = batch["input_ids"].shape
        if b < 8:  # one forward is fastest for a handful of rows
            return predict_ensemble(res.prompts, prompt_ids, batch, voting, scores, early_exit)
        key = (len(prompt_ids), bucket(b), bucket(t), early_exit)
        plan = self.ensemble_plans.choose(key)
        t0 = time.perf_counter()
        out = predict_ensemble(res.prompts, prompt_ids, batch, voting, scores, early_exit, plan)
        self.ensemble_plans.record(key, plan, time.perf_counter() - t0)
        return out
