"""Retention: finished jobs (with their chunks and webhook history) are deleted once they are
older than their retention - the job's own, else its tenant's (`predq limits set --retention`),
else PREDQ_RETENTION_DAYS. A finished bulk job's input chunks go at once unless it asked to
keep them. Run by the reconciler."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, and_, delete, select, true, update

from service.core.states import FINAL_STATES
from service.core.times import as_utc, utcnow
from service.store.db import job_chunks, jobs, tenant_limits, webhook_attempts, webhook_events

FINAL = [s.value for s in FINAL_STATES]


def sweep(conn: Connection, default_seconds: float, limit: int = 5_000) -> dict[str, int]:
    """Delete up to `limit` expired jobs; drop finished bulk jobs' inputs."""
    now = utcnow()
    dropped = conn.execute(
        update(job_chunks).where(
            job_chunks.c.inputs.is_not(None),
            job_chunks.c.job_id.in_(select(jobs.c.id).where(
                jobs.c.status.in_(FINAL), jobs.c.keep_inputs.is_(False))))
        .values(inputs=None)).rowcount
    own = dict(conn.execute(select(tenant_limits.c.tenant, tenant_limits.c.retention).where(
        tenant_limits.c.retention.is_not(None))).all())
    expired: list[str] = []
    # Jobs on the default retention, tenant by tenant for those with their own.
    rules = [(jobs.c.tenant.not_in(list(own)) if own else true(), default_seconds)]
    rules += [(jobs.c.tenant == tenant, seconds) for tenant, seconds in own.items()]
    for where, seconds in rules:
        if len(expired) >= limit:
            break
        expired += conn.execute(
            select(jobs.c.id).where(
                jobs.c.status.in_(FINAL), jobs.c.retention.is_(None), where,
                jobs.c.finished_at < now - timedelta(seconds=seconds))
            .limit(limit - len(expired))).scalars().all()
    # Jobs with a retention of their own.
    for job_id, seconds, finished in conn.execute(
            select(jobs.c.id, jobs.c.retention, jobs.c.finished_at).where(
                jobs.c.status.in_(FINAL), jobs.c.retention.is_not(None))
            .limit(limit)).all():
        if as_utc(finished) < now - timedelta(seconds=seconds):
            expired.append(job_id)
    deleted = delete_jobs(conn, expired)
    return {"deleted": deleted, "inputs_dropped": dropped}


def delete_jobs(conn: Connection, job_ids: list[str]) -> int:
    if not job_ids:
        return 0
    events = select(webhook_events.c.id).where(webhook_events.c.job_id.in_(job_ids))
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.event_id.in_(events)))
    conn.execute(delete(webhook_events).where(webhook_events.c.job_id.in_(job_ids)))
    conn.execute(delete(job_chunks).where(job_chunks.c.job_id.in_(job_ids)))
    return conn.execute(delete(jobs).where(and_(jobs.c.id.in_(job_ids),
                                                jobs.c.status.in_(FINAL)))).rowcount
