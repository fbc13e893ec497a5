"""Prometheus metrics: request latency, job counts by status, queue depth, serving cache."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
LATENCY = Histogram("composer_http_request_seconds", "HTTP request latency", ["method", "route", "status"],
                    registry=REGISTRY)  # fmt: skip
JOBS = Gauge("composer_jobs", "jobs by status", ["status"], registry=REGISTRY)
QUEUE = Gauge("composer_queue_depth", "jobs queued in the registry", registry=REGISTRY)
CACHE = Counter("composer_cache_events_total", "serving cache events", ["event"], registry=REGISTRY)
LOADED = Gauge("composer_cache_loaded_modules", "modules resident in the serving cache", registry=REGISTRY)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def timing(request: Request, call_next):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path, str(response.status_code)).observe(time.perf_counter() - t)
        return response
