"""Keyset pagination and integrity-error translation shared by the repository modules."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry_db.errors import Conflict, InvalidInput

T = TypeVar("T")
MAX_LIMIT = 200


@dataclass
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), row_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        ts, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(ts), str(row_id)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"invalid cursor: {e}") from None


def paginate(s: Session, stmt: Select[Any], model: Any, limit: int, cursor: str | None) -> Page[Any]:
    """Newest first, by (created_at, id); the cursor is opaque to clients."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    if cursor:
        ts, row_id = decode_cursor(cursor)
        stmt = stmt.where(or_(model.created_at < ts, and_(model.created_at == ts, model.id < row_id)))
    rows = s.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)).all()
    nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return Page(items=rows[:limit], next_cursor=nxt)


def flush_unique(s: Session, what: str) -> None:
    """Flush, turning a uniqueness violation into a clear Conflict (the transaction is then void)."""
    try:
        s.flush()
    except IntegrityError as e:
        raise Conflict(f"{what} (database said: {str(e.orig).splitlines()[0]})") from None
