"""What the broker still holds: the job ids of `run_job` messages waiting in a queue, or delivered to a
worker moments ago. The reconcile sweep re-sends a long-queued job only when its message is not there,
so a healthy backlog is never sent twice.

A queued job's message that was delivered to a worker is about to be claimed (then the job is running),
or its worker died before claiming it: Redis would only restore it after the visibility timeout (hours),
and kombu's SQLAlchemy transport never does. So a delivered message counts as held only while it is
fresh (Redis' `unacked_index` keeps the delivery time); an older one is a lost one.

Redis (the lists of the `gpu` and `default` queues, and the `unacked` hash), kombu's SQLAlchemy transport
(visible rows of `kombu_message`) and the filesystem transport are read directly. For any other broker, or when the broker cannot be read, `held_job_ids` answers None and the
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


def _redis(url: str, fresh_seconds: float) -> set[str]:
    import time

    import redis

    client = redis.Redis.from_url(url)
    try:
        raw: list[bytes] = []
        for q in QUEUES:
            for key in (q, *(f"{q}{_PRIORITY_SEP}{p}" for p in (3, 6, 9))):
                raw.extend(client.lrange(key, 0, -1))
        recent = client.zrangebyscore("unacked_index", time.time() - fresh_seconds, "+inf")
        for value in client.hmget("unacked", recent) if recent else []:  # [message, exchange, routing key]
            if value is not None:
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
            payloads = c.execute(text("SELECT payload FROM kombu_message WHERE visible")).scalars().all()
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


def held_job_ids(app: Celery, fresh_seconds: float = 60.0) -> set[str] | None:
    """`fresh_seconds`: how long a delivered, unclaimed message still counts as on its way to a claim."""
    url = app.conf.broker_url or ""
    try:
        if url.startswith(("redis://", "rediss://")):
            return _redis(url, fresh_seconds)
        if url.startswith("sqla+"):
            return _sqlalchemy(url[len("sqla+") :])
        if url.startswith("filesystem://"):
            return _filesystem(app.conf.broker_transport_options["data_folder_in"])
    except Exception as e:  # noqa: BLE001 - an unreadable broker must not stop the sweep
        log.warning("could not read the broker's queues (%s); re-sending long-queued jobs", e)
    return None
