"""RFC 9457 problem+json for every error, with a stable `type` and the offending field."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from composer.errors import ArtifactError, ComposerError, DataError, IncompatibleBaseError
from registry_db.errors import BlobCorrupted, Conflict, InvalidInput, LimitExceeded, NotFound

BASE = "https://adapter-composer.dev/problems/"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):  # noqa: N818 - it is the RFC's name
    def __init__(self, status: int, type_: str, detail: str, **extra: Any):
        self.status, self.type, self.detail, self.extra = status, type_, detail, extra


def problem(status: int, type_: str, detail: str, instance: str | None = None, **extra: Any) -> JSONResponse:
    body = {"type": BASE + type_, "title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if "retry_after" in extra:
        headers = {"Retry-After": str(extra["retry_after"])}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def _field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem(exc.status, exc.type, exc.detail, request.url.path, **exc.extra)

    @app.exception_handler(NotFound)
    async def _nf(request: Request, exc: NotFound) -> JSONResponse:
        return problem(404, "not-found", str(exc), request.url.path)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem(409, "conflict", str(exc), request.url.path)

    @app.exception_handler(OperationalError)
    async def _registry_down(request: Request, exc: OperationalError) -> JSONResponse:
        return problem(
            503,
            "registry-unavailable",
            "the registry database is unreachable; retry shortly",
            request.url.path,
            retry_after=2,
        )

    @app.exception_handler(LimitExceeded)
    async def _limit(request: Request, exc: LimitExceeded) -> JSONResponse:
        return problem(429, "too-many-jobs", str(exc), request.url.path, retry_after=30)

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        return problem(422, "invalid-input", str(exc), request.url.path)

    @app.exception_handler(BlobCorrupted)
    async def _corrupt(request: Request, exc: BlobCorrupted) -> JSONResponse:
        return problem(500, "blob-corrupted", str(exc), request.url.path)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        return problem(422, "invalid-dataset", str(exc), request.url.path, line=exc.line)

    @app.exception_handler(IncompatibleBaseError)
    async def _base(request: Request, exc: IncompatibleBaseError) -> JSONResponse:
        return problem(409, "wrong-base", str(exc), request.url.path)

    @app.exception_handler(ArtifactError)
    async def _artifact(request: Request, exc: ArtifactError) -> JSONResponse:
        return problem(422, "invalid-artifact", str(exc), request.url.path)

    @app.exception_handler(ComposerError)
    async def _composer(request: Request, exc: ComposerError) -> JSONResponse:
        return problem(422, "invalid-input", str(exc), request.url.path)

    async def _validation(request: Request, exc: RequestValidationError | ValidationError) -> JSONResponse:
        errs = _field_errors(list(exc.errors()))
        field = errs[0]["field"] if errs else None
        return problem(422, "validation-error", "the request is invalid", request.url.path, field=field, errors=errs)

    # FastAPI's request validation and pydantic's (job specs validated in the handlers) answer alike.
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(ValidationError, _validation)  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = TITLES.get(exc.status_code, "error").lower().replace(" ", "-")
        return problem(exc.status_code, slug, str(exc.detail), request.url.path)

    # anything else reaches api.edge.Edge, which answers a 500 without dropping the connection
