"""The edge of the app: every request gets a request id (the caller's `X-Request-ID` when it is a sane
one, else a new one), echoed in the response's `X-Request-ID` header. An exception that no handler took
becomes an RFC 9457 500 carrying that id, logged once with its traceback, and is *not* re-raised: a
re-raised exception makes uvicorn close the keep-alive connection under the client, so the client's
next request, any request, failed with a reset.

A plain ASGI middleware, outermost of the app's own (inside Starlette's ServerErrorMiddleware, which
then never sees an exception)."""

from __future__ import annotations

import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BASE, TITLES

log = logging.getLogger("api.edge")
HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == HEADER and _SANE.fullmatch(value):
            return value.decode()
    return uuid.uuid4().hex


class Edge:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception as exc:  # noqa: BLE001 - the edge: nothing may pass it
            log.exception(
                "unhandled %s on %s %s (request %s)", type(exc).__name__, scope.get("method"), scope.get("path"), rid
            )
            if started:  # the body is under way: it cannot become a problem any more
                return
            body = {
                "type": BASE + "internal",
                "title": TITLES[500],
                "status": 500,
                "detail": f"an internal error ({type(exc).__name__}); quote request id {rid} to the operator",
                "instance": scope.get("path"),
                "request_id": rid,
            }
            data = json.dumps(body).encode()
            headers = [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(data)).encode()),
                (HEADER, rid.encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": data})
