"""Webhook events that are not getting through: dead-lettered, or pending after a failed try."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

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


def grouped(conn: Connection, tenant: str, limit: int) -> list[dict[str, Any]]:
    """The tenant's failing events grouped by endpoint, URL, status and last error: one row
    each, with how many events it holds, the newest one's job, and when the first and the
    last of them were created; the most recent groups first, up to `limit`. Twenty events
    that failed alike are one line with a count, not twenty lines."""
    e = webhook_events.c
    failing = or_(e.status == "dead", and_(e.status == "pending", e.attempts > 0))
    newest = func.max(e.created_at)
    stmt = (
        select(e.endpoint_id, e.url, e.status, e.last_error, func.count().label("events"),
               func.min(e.created_at).label("first_at"), newest.label("last_at"),
               func.sum(e.attempts).label("attempts"))
        .where(e.tenant == tenant, failing)
        .group_by(e.endpoint_id, e.url, e.status, e.last_error)
        .order_by(newest.desc())
        .limit(limit)
    )
    groups = [dict(row) for row in conn.execute(stmt).mappings()]
    for group in groups:  # the newest event's job: where to look first
        group["job_id"] = conn.execute(
            select(e.job_id).where(e.tenant == tenant, e.endpoint_id == group["endpoint_id"],
                                   e.url == group["url"], e.status == group["status"], failing,
                                   e.last_error.is_(None) if group["last_error"] is None
                                   else e.last_error == group["last_error"])
            .order_by(e.created_at.desc()).limit(1)).scalar()
    return groups
