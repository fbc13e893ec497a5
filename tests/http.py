"""The HTTP client of every test that talks to a real server process: an httpx client whose transport
counts connections the server dropped under a request (a reset, or a disconnect without a response).
The session fails if any happened (tests/conftest.py), since a dropped keep-alive connection breaks
the client's next, unrelated request. Chaos tests that kill the server on purpose use plain httpx."""

from __future__ import annotations

from typing import Any

import httpx

DROPPED: list[str] = []  # "METHOD url: error" for each connection the server dropped


class Counting(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            DROPPED.append(f"{request.method} {request.url}: {type(e).__name__}: {e}")
            raise


def client(base_url: str, key: str | None = None, **kw: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, transport=Counting(), timeout=kw.pop("timeout", 60), **kw)
