"""Typed dependencies: the registry, the caller (from the Bearer key) and scope checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

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


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(get_registry)]


def get_caller(request: Request, registry: RegistryDep) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthorized", "send 'Authorization: Bearer <key>'")
    with registry.tx() as s:
        key = keys.authenticate(s, token.strip())
        if key is None:
            raise Problem(401, "unauthorized", "unknown or revoked API key")
        return Caller(owner_id=key.owner_id, key_id=key.id, scopes=frozenset(key.scopes))


def require(scope: str):  # type: ignore[no-untyped-def]
    def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not caller.can(scope):
            raise Problem(403, "forbidden", f"this key lacks the '{scope}' scope")
        return caller

    return check


Reader = Annotated[Caller, Depends(require("read"))]
Trainer = Annotated[Caller, Depends(require("train"))]
Admin = Annotated[Caller, Depends(require("admin"))]
Operator = Annotated[Caller, Depends(require("operator"))]
