"""Owners and API keys. A key is shown once at creation; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_db.errors import InvalidInput, NotFound
from registry_db.models import SCOPES, ApiKey, Owner, utcnow
from registry_db.repo.common import flush_unique


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_owner(s: Session, name: str) -> Owner:
    owner = Owner(name=name)
    s.add(owner)
    flush_unique(s, f"an owner named {name!r} already exists")
    return owner


def get_owner(s: Session, owner_id: str) -> Owner:
    owner = s.get(Owner, owner_id)
    if owner is None:
        raise NotFound(f"owner {owner_id} does not exist")
    return owner


def get_or_create_owner(s: Session, name: str) -> Owner:
    owner = s.scalars(select(Owner).where(Owner.name == name)).first()
    return owner or create_owner(s, name)


def create_key(
    s: Session, owner_id: str, scopes: list[str], name: str = "", secret: str | None = None
) -> tuple[ApiKey, str]:
    """Return (row, plaintext secret). The secret is not recoverable afterwards."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise InvalidInput(f"scopes must be a non-empty subset of {list(SCOPES)}; got {scopes}")
    if s.get(Owner, owner_id) is None:
        raise NotFound(f"owner {owner_id} does not exist")
    secret = secret or "ak_" + secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise InvalidInput("an API key must be at least 16 characters")
    key = ApiKey(
        owner_id=owner_id, name=name, prefix=secret[:10], key_hash=hash_key(secret), scopes=sorted(set(scopes))
    )
    s.add(key)
    flush_unique(s, "this key already exists")
    return key, secret


def authenticate(s: Session, secret: str) -> ApiKey | None:
    """The active key for a secret, or None (unknown or revoked)."""
    key = s.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(secret))).first()
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        key.last_used_at = now  # at most one write a minute per key: reads stay read-only transactions
    return key


def revoke_key(s: Session, key_id: str, owner_id: str | None = None) -> ApiKey:
    key = s.get(ApiKey, key_id)
    if key is None or (owner_id is not None and key.owner_id != owner_id):
        raise NotFound(f"key {key_id} not found")
    key.revoked_at = key.revoked_at or utcnow()
    return key


def list_keys(s: Session, owner_id: str) -> list[ApiKey]:
    return list(s.scalars(select(ApiKey).where(ApiKey.owner_id == owner_id)).all())


def admin_key_exists(s: Session) -> bool:
    keys = s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))).all()
    return any("admin" in k.scopes for k in keys)
