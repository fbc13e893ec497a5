"""Adapters (every kind of task module), lineage, adapter sets (MT-A sets, prompt ensembles) and aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry_db.models.base import Base, UTCDateTime, new_id, utcnow

ADAPTER_KINDS = (
    *("st_a", "mt_a", "fusion", "soft_prompt", "lora", "composition"),
    *("ia3", "bitfit", "compacter", "adalora", "diff", "prefix", "p_tuning"),  # the PEFT surveys' methods
)
ADAPTER_STATUSES = ("training", "ready", "archived")
SET_KINDS = ("mt_a", "ensemble")


class Adapter(Base):
    __tablename__ = "adapters"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ad"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    base_model_id: Mapped[str] = mapped_column(ForeignKey("base_models.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="ready")
    method_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # safetensors weights
    config_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # artifact JSON config
    param_count: Mapped[int] = mapped_column(Integer, default=0)
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # its weights and config blobs
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    visibility: Mapped[str] = mapped_column(String(10), default="private")
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (
        UniqueConstraint("owner_id", "task_id", "kind", "name", "version"),
        CheckConstraint(f"kind IN ({', '.join(repr(k) for k in ADAPTER_KINDS)})", name="kind"),
        CheckConstraint("status IN ('training', 'ready', 'archived')", name="status"),
        CheckConstraint("visibility IN ('private', 'public')", name="visibility"),
        CheckConstraint("version >= 1", name="version_positive"),
    )


class FusionMember(Base):
    """A fusion's constituent adapters, in order."""

    __tablename__ = "fusion_members"
    fusion_id: Mapped[str] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[str] = mapped_column(ForeignKey("adapters.id"), index=True)
    __table_args__ = (UniqueConstraint("fusion_id", "adapter_id"),)


class AdapterSet(Base):
    """A named, ordered set: an MT-A set (members trained jointly) or a prompt ensemble for one task."""

    __tablename__ = "adapter_sets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("set"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id"), nullable=True, index=True)
    voting: Mapped[str | None] = mapped_column(String(20), nullable=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (
        UniqueConstraint("owner_id", "kind", "name"),
        CheckConstraint("kind IN ('mt_a', 'ensemble')", name="kind"),
    )


class AdapterSetMember(Base):
    __tablename__ = "adapter_set_members"
    set_id: Mapped[str] = mapped_column(ForeignKey("adapter_sets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[str] = mapped_column(ForeignKey("adapters.id"), index=True)
    __table_args__ = (UniqueConstraint("set_id", "adapter_id"),)


class Alias(Base):
    """A movable pointer `task@alias` to one adapter version (MLflow style)."""

    __tablename__ = "aliases"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("al"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(100))
    adapter_id: Mapped[str] = mapped_column(ForeignKey("adapters.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("owner_id", "task_id", "alias"),)


class AliasHistory(Base):
    __tablename__ = "alias_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alias_id: Mapped[str] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"), index=True)
    adapter_id: Mapped[str] = mapped_column(ForeignKey("adapters.id"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReferenceEpoch(Base):
    """One row whose serial every write that changes what an adapter reference (an id, `name:version`,
    `task@alias`) resolves to increments in its own transaction: a registration, an archive, an alias move.
    API processes that remember resolved references read it to know when to forget them."""

    __tablename__ = "reference_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    serial: Mapped[int] = mapped_column(Integer, default=0)
