"""/healthz (alive), /readyz (database, broker and blob store reachable), /metrics (Prometheus, with an
operator key: `Authorization: Bearer`, which Prometheus sends with `authorization: {credentials: ...}`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import Operator
from api.errors import problem
from api.metrics import CACHE, JOBS, LOADED, QUEUE, REGISTRY
from composer import kinds
from registry_db.models import JOB_STATUSES
from registry_db.repo import jobs

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"content": {"application/problem+json": {}}}})
def readyz(request: Request) -> Response:
    reg = request.app.state.registry
    checks: dict[str, str] = {}
    try:
        with reg.engine.connect() as c:
            c.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["database"] = f"{type(e).__name__}: {e}"
    ok, msg = request.app.state.broker_reachable()  # the enqueue side's own check (api/app.py wires it)
    checks["broker"] = msg
    try:
        sha = reg.blobs.put(b"readyz")
        reg.blobs.get(sha)
        checks["blobs"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["blobs"] = f"{type(e).__name__}: {e}"
    if all(v == "ok" for v in checks.values()):
        from fastapi.responses import JSONResponse

        return JSONResponse({"status": "ready", "checks": checks})
    return problem(503, "not-ready", "a dependency is unreachable", "/readyz", checks=checks)


@router.get("/serving/stats")
def serving_stats(request: Request, caller: Operator) -> dict:
    """The serving cache of this API process (operators): hits, misses, evictions, what is resident, and
    the cold loads (artifact fetch + attach) of the latest 4,096 misses."""
    rt = request.app.state.runtime
    loads = list(rt.load_seconds)
    loaded = rt.loaded()

    def pct(q: float, host: bool | None = None) -> float | None:
        xs = sorted(t for t, from_host in loads if host is None or from_host == host)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3) if xs else None

    return {
        "hits": rt.stats.hits,
        "misses": rt.stats.misses,
        "evictions": rt.stats.evictions,
        "host_hits": rt.stats.host_hits,
        "host_modules": len(rt.host),
        "resident_modules": len(loaded),
        "resident_bytes": sum(m["bytes"] for m in loaded),
        "cache_bytes": rt.cache_bytes,
        "cold_loads": len(loads),
        "cold_load_p50_ms": pct(0.5),
        "cold_load_p99_ms": pct(0.99),
        # reloads of evicted modules from the host tier, and first loads from the blob store
        "host_reload_p50_ms": pct(0.5, True),
        "host_reload_p99_ms": pct(0.99, True),
        "store_load_p50_ms": pct(0.5, False),
        "store_load_p99_ms": pct(0.99, False),
        # the micro-batcher's forwards (tokenise, forward, heads): request latency minus these is the HTTP path
        "batches": request.app.state.batcher.batches,
        "forward_seconds": round(request.app.state.batcher.forward_seconds, 6),
        "ensemble_plans": rt.ensemble_plans.chosen(),  # (K, rows, tokens, early exit) -> the plan it runs
        # (layouts, rows, tokens) -> the plan a mixed batch with prompt rows runs (composer.rows)
        "row_plans": {k: v for c in rt.row_plans.values() for k, v in c.chosen().items()},
        # per kind, what differs between machines in how it serves (the diff: its C++ kernel loaded or not)
        "kinds": {name: state for name, kind in kinds.KINDS.items() if (state := kind.serving_state())},
    }


@router.get("/metrics", response_class=Response)
def metrics(request: Request, caller: Operator) -> Response:
    reg = request.app.state.registry
    with reg.tx() as s:
        counts = jobs.count_by_status(s)
    for status in JOB_STATUSES:
        JOBS.labels(status).set(counts.get(status, 0))
    QUEUE.set(counts.get("queued", 0))
    rt = request.app.state.runtime
    for event in ("hits", "misses", "evictions"):
        current = getattr(rt.stats, event)
        counter = CACHE.labels(event)
        counter.inc(max(0, current - counter._value.get()))
    LOADED.set(len(rt.cache))
    body = generate_latest(REGISTRY) + generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
