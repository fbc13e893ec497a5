"""The FastAPI application: settings, registry, serving runtime, bootstrap, routes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from api import errors
from api.adapter_metrics import AdapterMetrics
from api.batcher import MicroBatcher
from api.caches import Recent
from api.edge import Edge
from api.limits import RateLimiter
from api.loaders import prefetch, watch_references
from api.metrics import install as install_metrics
from api.routes import (
    adapters,
    base_models,
    compositions,
    datasets,
    ensembles,
    health,
    jobs,
    keys,
    merges,
    predict,
    recommendations,
    tasks,
    ui,
)
from composer.serving import Runtime
from registry_db.registry import Registry
from registry_db.repo import keys as key_repo
from service.settings import Settings, get_settings, open_registry

log = logging.getLogger(__name__)


def bootstrap(registry: Registry, settings: Settings) -> None:
    """Create the admin key from COMPOSER_BOOTSTRAP_KEY if no admin key exists; register the packaged encoder."""
    if settings.bootstrap_key:
        with registry.tx() as s:
            if not key_repo.admin_key_exists(s):
                owner = key_repo.get_or_create_owner(s, "admin")
                key_repo.create_key(
                    s, owner.id, ["operator", "admin", "train", "read"], name="bootstrap", secret=settings.bootstrap_key
                )
                log.warning("created the bootstrap admin key")
    if settings.register_packaged_encoder:
        from composer.base import packaged_encoder_dir
        from service.catalog import register_base_model

        d = packaged_encoder_dir()
        if d is not None:
            register_base_model(registry, d, name="all-MiniLM-L6-v2")


def broker_reachable() -> tuple[bool, str]:
    """The enqueue side's own readiness check (imported when asked: a test app with its own `send` never
    builds the Celery app)."""
    from workers.queueing import broker_reachable as reachable

    return reachable()


def create_app(
    settings: Settings | None = None, registry: Registry | None = None, send: Callable[[str, str], bool] | None = None
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if app.state.registry is None:
            app.state.registry = open_registry(settings)
        bootstrap(app.state.registry, settings)
        stop = threading.Event()
        warm = None
        if settings.serving_prefetch:
            args = (app.state.runtime, app.state.registry, settings.device, stop)
            warm = threading.Thread(target=prefetch, args=args, name="prefetch", daemon=True)
            warm.start()
        watch = None
        if settings.adapter_cache_seconds > 0:
            args = (app.state.adapter_refs, app.state.registry, settings.adapter_cache_seconds, stop)
            watch = threading.Thread(target=watch_references, args=args, name="reference-epoch", daemon=True)
            watch.start()
        yield
        stop.set()
        await app.state.batcher.stop()
        for thread in (warm, watch):
            if thread is not None:
                thread.join(timeout=30)
        app.state.registry.close()

    app = FastAPI(
        title="Adapter composition service",
        version="0.1.0",
        lifespan=lifespan,
        description="Adapters, AdapterFusion and soft-prompt ensembles on one frozen encoder.",
    )
    app.state.settings = settings
    app.state.registry = registry
    # the one place HTTP reaches the Celery side: publishing "run job X", and whether the broker takes messages
    if send is None:
        from workers.queueing import enqueue as send
    app.state.send = send
    app.state.broker_reachable = broker_reachable
    app.state.callers = Recent(10_000, ttl=settings.auth_cache_seconds)  # key hash -> Caller
    # (owner, adapter reference) -> its row, while it serves: dropped by an archive or alias move here at once,
    # and all of them when the registry's reference epoch moves (`watch_references`)
    app.state.adapter_refs = Recent(10_000, ttl=None if settings.adapter_cache_seconds > 0 else 0)
    app.state.module_facts = Recent(10_000)  # adapter id -> what never changes about it (task, base, members)
    app.state.limiter = RateLimiter(settings.predict_rate_per_key, settings.predict_burst_per_key)
    host_mb = settings.serving_host_cache_mb
    app.state.runtime = Runtime(
        cache_bytes=int(settings.serving_cache_mb * (1 << 20)),
        host_bytes=None if host_mb is None else int(host_mb * (1 << 20)),
        precision=settings.serving_precision,
    )
    app.state.batcher = MicroBatcher(
        app.state.runtime,
        settings.batch_max_rows,
        settings.batch_max_wait_ms,
        settings.queue_max_rows,
        settings.request_timeout_s,
    )
    app.state.adapter_metrics = AdapterMetrics(
        lambda: app.state.runtime.stats.per_module, settings.metrics_top_adapters
    )
    app.state.metrics_registry = CollectorRegistry()  # this app's own series (the module-level ones are shared)
    app.state.metrics_registry.register(app.state.adapter_metrics)
    errors.install(app)
    install_metrics(app)
    app.add_middleware(Edge)  # the outermost of ours: request ids, and a 500 for what no handler took
    # the routers carry their own prefix, so a route's template (its latency label) is its whole path; the
    # router tries them in this order, the busiest first
    for module in (
        predict,
        ensembles,
        health,
        keys,
        base_models,
        tasks,
        recommendations,
        datasets,
        jobs,
        adapters,
        merges,
        compositions,
        ui,
    ):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=ui.UI), name="ui-static")
    return app
