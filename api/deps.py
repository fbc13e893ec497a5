"""Typed dependencies: the registry, the caller (from the Bearer key) and scope checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.caches import Recent
from api.errors import Problem
from registry_db.registry import Registry
from registry_db.repo import keys

# `read` lists and predicts; `train` also uploads and submits; `admin` also manages its own owner's keys;
# `operator` runs the service: owners, keys for any owner, base models, metrics.
SCOPE_ORDER = {"read": 0, "train": 1, "admin": 2, "operator": 3}


@dataclass(frozen=True)
class Caller:
    owner_id: str
    key_id: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        """`operator` implies `admin` implies `train` implies `read`."""
        return any(SCOPE_ORDER[s] >= SCOPE_ORDER[scope] for s in self.scopes)


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(get_registry)]


def _authenticate(registry: Registry, token: str) -> Caller:
    with registry.tx() as s:
        key = keys.authenticate(s, token)
        if key is None:
            raise Problem(401, "unauthorized", "unknown or revoked API key")
        return Caller(owner_id=key.owner_id, key_id=key.id, scopes=frozenset(key.scopes))


async def get_caller(request: Request, registry: RegistryDep) -> Caller:
    """The caller of a Bearer key. A key found valid is remembered for `auth_cache_seconds` (by its hash, in
    this process), so a predict does not read the key table every time; a revoke in this process forgets it
    at once, other API processes within that time."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthorized", "send 'Authorization: Bearer <key>'")
    cache: Recent[str, Caller] = request.app.state.callers
    digest = keys.hash_key(token.strip())
    caller = cache.get(digest)
    if caller is None:
        caller = await run_in_threadpool(_authenticate, registry, token.strip())
        cache.put(digest, caller)
    return caller


def forget_key(request: Request, key_id: str) -> None:
    """A revoked key stops working in this process at once."""
    request.app.state.callers.drop(lambda c: c.key_id == key_id)


def require(scope: str):  # type: ignore[no-untyped-def]
    async def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not caller.can(scope):
            raise Problem(403, "forbidden", f"this key lacks the '{scope}' scope")
        return caller

    return check


Reader = Annotated[Caller, Depends(require("read"))]
Trainer = Annotated[Caller, Depends(require("train"))]
Admin = Annotated[Caller, Depends(require("admin"))]
Operator = Annotated[Caller, Depends(require("operator"))]
