"""Prometheus metrics: request latency, job counts by status, queue depth, serving cache."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()
LATENCY = Histogram(
    "composer_http_request_seconds", "HTTP request latency", ["method", "route", "status"], registry=REGISTRY
)
JOBS = Gauge("composer_jobs", "jobs by status", ["status"], registry=REGISTRY)
QUEUE = Gauge("composer_queue_depth", "jobs queued in the registry", registry=REGISTRY)
CACHE = Counter("composer_cache_events_total", "serving cache events", ["event"], registry=REGISTRY)
LOADED = Gauge("composer_cache_loaded_modules", "modules resident in the serving cache", registry=REGISTRY)


class Timing:
    """HTTP latency per method, route and status, to the start of the response. A plain ASGI middleware:
    Starlette's `@app.middleware("http")` runs each request through a task group and memory streams, which
    cost about a millisecond per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t, done = time.perf_counter(), False

        def observe(status: int) -> None:
            nonlocal done
            done = True
            path = getattr(scope.get("route"), "path", "unmatched")  # the router sets it in this scope
            LATENCY.labels(scope["method"], path, str(status)).observe(time.perf_counter() - t)

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not done:  # failed before it answered
                observe(500)


def install(app: FastAPI) -> None:
    app.add_middleware(Timing)
