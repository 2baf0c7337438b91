"""Retention: finished jobs (with their chunks and webhook history) are deleted once they are
older than their retention - the job's own, else its tenant's (`predq limits set --retention`),
else PREDQ_RETENTION_DAYS. A finished bulk job's input chunks go at once unless it asked to
keep them. Run by the reconciler, in bounded, indexed steps: every query below has its expiry
in SQL, so a LIMIT only ever takes jobs that are due, however many are not."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    and_,
    bindparam,
    delete,
    func,
    select,
    true,
    update,
)

from service.core.states import FINAL_STATES
from service.core.times import utcnow
from service.store.db import (
    job_chunks,
    jobs,
    shadow_chunk_results,
    shadow_results,
    tenant_limits,
    webhook_attempts,
    webhook_events,
)

FINAL = [s.value for s in FINAL_STATES]
MIN_RETENTION = 60  # seconds: a job's own retention is at least this (jobs.options)


def sweep(conn: Connection, default_seconds: float, limit: int = 5_000) -> dict[str, int]:
    """Delete up to `limit` expired jobs; drop finished bulk jobs' inputs."""
    now = utcnow()
    dropped = drop_inputs(conn, limit)
    own = dict(conn.execute(select(tenant_limits.c.tenant, tenant_limits.c.retention).where(
        tenant_limits.c.retention.is_not(None))).all())
    expired: list[str] = []
    # Jobs on the default retention, tenant by tenant for those with their own
    # (ix_jobs_status_finished: status, finished_at).
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
    if len(expired) < limit:  # jobs with a retention of their own (ix_jobs_own_retention)
        expired += conn.execute(
            select(jobs.c.id).where(
                jobs.c.retention.is_not(None),
                jobs.c.finished_at < now - timedelta(seconds=MIN_RETENTION),
                jobs.c.status.in_(FINAL), _past_own_retention(conn, now))
            .order_by(jobs.c.finished_at).limit(limit - len(expired))).scalars().all()
    return {"deleted": delete_jobs(conn, expired), "inputs_dropped": dropped}


def _past_own_retention(conn: Connection, now: datetime) -> ColumnElement[bool]:
    """finished_at + retention seconds < now, in the database's own date arithmetic."""
    at = bindparam("retention_now", now, type_=DateTime(timezone=True))
    if conn.dialect.name == "postgresql":
        return jobs.c.finished_at + func.make_interval(0, 0, 0, 0, 0, 0, jobs.c.retention) < at
    # SQLite keeps times as text: compare them as Julian days.
    day: Any = func.julianday(jobs.c.finished_at) + jobs.c.retention / 86400.0
    return and_(day < func.julianday(at))


def drop_inputs(conn: Connection, limit: int) -> int:
    """Drop the input chunks of up to `limit` finished bulk jobs that did not ask to keep them
    (a succeeded job drops its own as it finishes; this catches failed, cancelled and expired
    ones). Reads only chunks that still hold inputs (ix_job_chunks_holding_inputs)."""
    holding = conn.execute(
        select(job_chunks.c.job_id).join(jobs, jobs.c.id == job_chunks.c.job_id)
        .where(job_chunks.c.inputs.is_not(None), jobs.c.status.in_(FINAL),
               jobs.c.keep_inputs.is_(False))
        .distinct().limit(limit)).scalars().all()
    if not holding:
        return 0
    return int(conn.execute(update(job_chunks).where(
        job_chunks.c.job_id.in_(holding), job_chunks.c.inputs.is_not(None))
        .values(inputs=None)).rowcount)


def delete_jobs(conn: Connection, job_ids: list[str]) -> int:
    if not job_ids:
        return 0
    events = select(webhook_events.c.id).where(webhook_events.c.job_id.in_(job_ids))
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.event_id.in_(events)))
    conn.execute(delete(webhook_events).where(webhook_events.c.job_id.in_(job_ids)))
    conn.execute(delete(job_chunks).where(job_chunks.c.job_id.in_(job_ids)))
    conn.execute(delete(shadow_results).where(shadow_results.c.job_id.in_(job_ids)))
    conn.execute(delete(shadow_chunk_results).where(
        shadow_chunk_results.c.job_id.in_(job_ids)))
    return int(conn.execute(delete(jobs).where(and_(jobs.c.id.in_(job_ids),
                                                    jobs.c.status.in_(FINAL)))).rowcount)
