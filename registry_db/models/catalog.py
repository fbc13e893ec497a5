"""Base models, tasks and datasets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry_db.models.base import Base, UTCDateTime, new_id, utcnow

TASK_KINDS = ("classification", "regression")
SPLITS = ("train", "validation", "test")


class BaseModelRow(Base):
    __tablename__ = "base_models"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("bm"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    identity: Mapped[str] = mapped_column(String(64), unique=True)  # composer BaseIdentity.fingerprint
    config_hash: Mapped[str] = mapped_column(String(64))
    weights_hash: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(40))
    hidden_size: Mapped[int] = mapped_column(Integer)
    num_layers: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1000))  # config and tokenizer (and weights, unless derived)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A derived base: `parent_id`'s architecture and tokenizer with the encoder weights a job fine-tuned
    # (a multi-task adapter job), stored once as a blob. Owned by the job's owner; plain bases have none.
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("base_models.id"), default=None)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), default=None)
    weights_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    __table_args__ = (CheckConstraint("hidden_size > 0", name="hidden_size_positive"),)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("task"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    labels: Mapped[list[str]] = mapped_column(JSON)  # ordered: index = class id
    metric: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        CheckConstraint("kind IN ('classification', 'regression')", name="kind"),
    )


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(20))
    format: Mapped[str] = mapped_column(String(10))
    sha256: Mapped[str] = mapped_column(String(64))  # content address of the uploaded file (the blob)
    row_count: Mapped[int] = mapped_column(Integer)
    label_histogram: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (
        UniqueConstraint("task_id", "split", "sha256"),
        CheckConstraint("split IN ('train', 'validation', 'test')", name="split"),
        CheckConstraint("format IN ('jsonl', 'csv')", name="format"),
        CheckConstraint("row_count > 0", name="row_count_positive"),
    )
