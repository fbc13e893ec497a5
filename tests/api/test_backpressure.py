"""Backpressure: a flood of predictions gets 503 + Retry-After, nothing crashes, and the server recovers.
Also: concurrent requests for different adapters share forwards (micro-batching)."""

from __future__ import annotations

import asyncio

import httpx

from api.app import create_app
from service.settings import Settings
from tests.api.conftest import ADMIN


def test_flood_gets_503_then_the_server_is_healthy(api, tmp_path):
    ids = api.task_with_data()
    adapters = [api.train_adapter(ids), api.train_adapter(ids, name="b")]
    settings = Settings(
        data_dir=tmp_path, register_packaged_encoder=False, queue_max_rows=2, batch_max_wait_ms=500, batch_max_rows=64
    )
    app = create_app(settings, registry=api.registry, send=lambda *_: True)
    headers = {"Authorization": f"Bearer {ADMIN}"}

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            body = lambda i: {"adapter": adapters[i % 2], "inputs": [{"text": "good movie"}, {"text": "bad plot"}]}  # noqa: E731
            first = await asyncio.gather(*[c.post("/v1/predict", json=body(i), headers=headers) for i in range(30)])
            after = await c.post("/v1/predict", json=body(0), headers=headers)
            health = await c.get("/healthz")
            return [*first, after, health]

    responses = asyncio.run(flood())
    flood_, after, health = responses[:30], responses[30], responses[31]
    codes = [r.status_code for r in flood_]
    assert set(codes) <= {200, 503} and codes.count(503) >= 10 and codes.count(200) >= 1
    rejected = next(r for r in flood_ if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1" and rejected.headers["content-type"] == "application/problem+json"
    assert after.status_code == 200 and health.status_code == 200
    assert app.state.batcher.queued_rows == 0


def test_concurrent_requests_for_different_adapters_share_a_forward(api, tmp_path):
    ids = api.task_with_data()
    adapters = [api.train_adapter(ids), api.train_adapter(ids, name="b"), api.train_adapter(ids, name="c")]
    settings = Settings(data_dir=tmp_path, register_packaged_encoder=False, batch_max_wait_ms=100, batch_max_rows=64)
    app = create_app(settings, registry=api.registry, send=lambda *_: True)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    alone = {}
    for a in adapters:  # each request by itself, for comparison
        alone[a] = api.client.post(
            "/v1/predict", headers=headers, json={"adapter": a, "inputs": [{"text": "good movie"}]}
        ).json()

    async def together() -> list[dict]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            rs = await asyncio.gather(
                *[
                    c.post("/v1/predict", headers=headers, json={"adapter": a, "inputs": [{"text": "good movie"}]})
                    for a in adapters
                ]
            )
            return [r.json() for r in rs]

    outs = asyncio.run(together())
    assert app.state.batcher.batches == 1  # three adapters, one forward
    for a, out in zip(adapters, outs, strict=True):
        ours, ref = out["outputs"][0]["probabilities"], alone[a]["outputs"][0]["probabilities"]
        assert all(abs(ours[k] - ref[k]) < 1e-5 for k in ref)
