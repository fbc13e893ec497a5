"""What the broker still holds: the job ids of `run_job` messages waiting in a queue or delivered to a
worker and not yet acknowledged. The reconcile sweep re-sends a long-queued job only when its message
is not there, so a healthy backlog is never sent twice.

Redis (the lists of the `gpu` and `default` queues, and kombu's `unacked` hash), kombu's SQLAlchemy
transport (the `kombu_message` table, visible or delivered) and the filesystem transport are read
directly. For any other broker, or when the broker cannot be read, `held_job_ids` answers None and the
sweep falls back to re-sending (duplicates then back off at claim).
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)
QUEUES = ("gpu", "default")
TASK = "workers.tasks.run_job"
_PRIORITY_SEP = "\x06\x16"  # kombu's redis transport keeps priority levels 3, 6 and 9 under suffixed keys


def job_id_of(raw: str | bytes | dict[str, Any]) -> str | None:
    """The job id of a `run_job` message in kombu's JSON envelope (None for anything else)."""
    try:
        msg = raw if isinstance(raw, dict) else json.loads(raw)
        if msg.get("headers", {}).get("task") != TASK:
            return None
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _redis(url: str) -> set[str]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        raw: list[bytes] = []
        for q in QUEUES:
            for key in (q, *(f"{q}{_PRIORITY_SEP}{p}" for p in (3, 6, 9))):
                raw.extend(client.lrange(key, 0, -1))
        for value in client.hvals("unacked"):  # delivered to a worker, not acknowledged: [message, exchange, key]
            raw.append(json.dumps(json.loads(value)[0]).encode())
    finally:
        client.close()
    return {j for j in map(job_id_of, raw) if j}


def _sqlalchemy(url: str) -> set[str]:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("kombu_message"):
            return set()
        with engine.connect() as c:
            payloads = c.execute(text("SELECT payload FROM kombu_message")).scalars().all()
    finally:
        engine.dispose()
    return {j for j in map(job_id_of, payloads) if j}


def _filesystem(folder: str) -> set[str]:
    found = set()
    for p in Path(folder).glob("*.msg"):
        try:
            j = job_id_of(p.read_bytes())
        except OSError:  # consumed while we looked
            continue
        if j:
            found.add(j)
    return found


def held_job_ids(app: Celery) -> set[str] | None:
    url = app.conf.broker_url or ""
    try:
        if url.startswith(("redis://", "rediss://")):
            return _redis(url)
        if url.startswith("sqla+"):
            return _sqlalchemy(url[len("sqla+") :])
        if url.startswith("filesystem://"):
            return _filesystem(app.conf.broker_transport_options["data_folder_in"])
    except Exception as e:  # noqa: BLE001 - an unreadable broker must not stop the sweep
        log.warning("could not read the broker's queues (%s); re-sending long-queued jobs", e)
    return None
