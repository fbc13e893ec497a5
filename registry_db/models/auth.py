"""Owners and their API keys (stored hashed, never in plain text)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry_db.models.base import Base, UTCDateTime, new_id, utcnow

SCOPES = ("read", "train", "admin", "operator")  # each implies the ones before it


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("own"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    keys: Mapped[list[ApiKey]] = relationship(back_populates="owner")


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings, never enough to authenticate
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the secret
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    owner: Mapped[Owner] = relationship(back_populates="keys")
