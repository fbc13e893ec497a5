"""Glue between the registry rows and the composer serving runtime (the API owns both sides).

`ensure` makes a registered module resident (a fusion after its members) through its kind's
face, and returns a lease that the request holds until its forward is done."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from api.caches import Recent
from composer import kinds
from composer.serving import Resident, Runtime
from registry_db.models import Adapter, BaseModelRow
from registry_db.registry import Registry
from registry_db.repo import adapters, catalog
from service import artifact_store
from service.catalog import load_registered_base

log = logging.getLogger(__name__)


def resident(runtime: Runtime, base_row: BaseModelRow, device: str | None, reg: Registry) -> Resident:
    """The base resident in this process (loaded once; a derived base's weights from the blob store)."""
    return runtime.resident(
        base_row.id, lambda: load_registered_base(base_row, device, reg, precision=runtime.precision)
    )


@dataclass
class Lease:
    runtime: Runtime
    resident: Resident
    module_id: str
    members: list[str] = field(default_factory=list)
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.runtime.release(self.module_id, self.members)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()


def ensure(
    runtime: Runtime, reg: Registry, row: Adapter, base_row: BaseModelRow, members: list[Adapter], device: str | None
) -> Lease:
    """Make the module (and a fusion's members, in lineage order) resident, leased to the caller."""
    res = resident(runtime, base_row, device, reg)
    specs = [(m.id, kinds.get(m.kind), (lambda m=m: artifact_store.fetch(reg, m))) for m in members]
    runtime.ensure(res, base_row.id, row.id, kinds.get(row.kind), lambda: artifact_store.fetch(reg, row), specs)
    return Lease(runtime, res, row.id, [m.id for m in members])


def prefetch(runtime: Runtime, reg: Registry, device: str | None, stop: threading.Event) -> int:
    """Fill the host tier with ready modules (newest first) until it is full; returns how many were asked.
    Runs in a background thread of the API process; a module that fails to load is logged and skipped (its
    own requests will say why)."""
    with reg.tx() as s:
        rows = [r for r in adapters.servable(s) if kinds.get(r.kind).prefetchable]
        bases = {b: catalog.get_base_model(s, b) for b in {r.base_model_id for r in rows}}
    done = 0
    for row in rows:
        if stop.is_set():
            break
        try:
            res = resident(runtime, bases[row.base_model_id], device, reg)
            if not runtime.prefetch(res, row.id, kinds.get(row.kind), lambda row=row: artifact_store.fetch(reg, row)):
                break
        except Exception as e:  # noqa: BLE001 - one bad module must not stop the others
            log.warning("prefetch of %s failed: %s", row.id, e)
        done += 1
    log.info("prefetched %d modules into the host tier", done)
    return done


def watch_references(refs: Recent[Any, Adapter], reg: Registry, every: float, stop: threading.Event) -> None:
    """Forget every remembered adapter reference when the registry's reference epoch moves (a registration,
    an archive or an alias move, through any process) or cannot be read; checked every `every` seconds, so
    another process's change reaches this one's warm requests within that time. Runs in a thread of the API."""

    def epoch() -> int | None:
        try:
            with reg.tx() as s:
                return adapters.reference_epoch(s)
        except Exception as e:  # noqa: BLE001 - an outage: remember nothing until the registry answers again
            log.warning("cannot read the reference epoch: %s", e)
            return None

    seen = epoch()
    while not stop.wait(every):
        now = epoch()
        if now is None or now != seen:
            refs.drop(lambda _: True)
            seen = now


def adapter_json(row: Adapter, **extra: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "version": row.version,
        "status": row.status,
        "task_id": row.task_id,
        "base_model_id": row.base_model_id,
        "method_config": row.method_config,
        "param_count": row.param_count,
        "stored_bytes": row.stored_bytes,
        "metrics": row.metrics,
        "visibility": row.visibility,
        "job_id": row.job_id,
        "created_at": row.created_at.isoformat(),
        **extra,
    }
