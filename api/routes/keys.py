"""API keys. A key's secret is returned once, at creation.

An owner's admin manages that owner's keys only. Minting a key for another owner (which creates the
owner if needed) or an operator key takes the operator scope: an admin can never take over a tenant."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import Admin, RegistryDep, forget_key
from api.errors import Problem
from registry_db.models import ApiKey
from registry_db.repo import keys

router = APIRouter(prefix="/v1", tags=["keys"])


class KeyIn(BaseModel):
    owner: str | None = Field(None, description="owner name; default: the caller's own owner")
    scopes: list[Literal["read", "train", "admin", "operator"]] = Field(min_length=1)
    name: str = ""


def key_json(k: ApiKey) -> dict:
    return {
        "id": k.id,
        "owner_id": k.owner_id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes,
        "created_at": k.created_at.isoformat(),
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
    }


@router.post("/keys", status_code=201)
def create_key(body: KeyIn, caller: Admin, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        own = keys.get_owner(s, caller.owner_id)
        other_owner = body.owner is not None and body.owner != own.name
        if (other_owner or "operator" in body.scopes) and not caller.can("operator"):
            what = f"a key for owner {body.owner!r}" if other_owner else "an operator key"
            raise Problem(
                403, "forbidden", f"minting {what} takes the 'operator' scope; an admin manages its own owner's keys"
            )
        owner_id = keys.get_or_create_owner(s, body.owner).id if other_owner else caller.owner_id
        row, secret = keys.create_key(s, owner_id, list(body.scopes), body.name)
        return {**key_json(row), "key": secret}


@router.get("/keys")
def list_keys(caller: Admin, reg: RegistryDep) -> list[dict]:
    with reg.tx() as s:
        return [key_json(k) for k in keys.list_keys(s, caller.owner_id)]


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, request: Request, caller: Admin, reg: RegistryDep) -> dict:
    with reg.tx() as s:
        out = key_json(keys.revoke_key(s, key_id, caller.owner_id))
    forget_key(request, key_id)
    return out
