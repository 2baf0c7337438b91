"""Webhook events that are not getting through: dead-lettered, or pending after a failed try."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, or_, select

from service.store.db import webhook_events


def recent(conn: Connection, tenant: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` of the tenant's failing events, most recently created first, each with the
    error of its last attempt."""
    e = webhook_events.c
    failing = or_(e.status == "dead", and_(e.status == "pending", e.attempts > 0))
    stmt = (
        select(e.id, e.job_id, e.endpoint_id, e.url, e.type, e.status, e.attempts,
               e.last_error, e.next_attempt_at, e.created_at, e.finished_at)
        .where(e.tenant == tenant, failing)
        .order_by(e.created_at.desc(), e.id.desc())
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(stmt).mappings()]
