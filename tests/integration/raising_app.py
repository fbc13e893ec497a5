"""The service's own app (settings from the environment) plus routes that fail the ways code can fail
past every handler, for tests/integration/test_edge.py: `uvicorn --factory tests.integration.raising_app:create`."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.app import create_app


def create() -> FastAPI:
    app = create_app()

    @app.get("/v1/__raise__")
    async def raise_on_the_loop() -> dict:
        raise RuntimeError("a bug on the event loop")

    @app.get("/v1/__raise_in_thread__")
    async def raise_in_a_thread() -> dict:
        def bug() -> dict:
            return {"value": {}["missing"]}

        return await run_in_threadpool(bug)

    @app.get("/v1/__raise_sync__")
    def raise_in_a_sync_route() -> dict:
        raise ZeroDivisionError("a bug in a plain route")

    return app
