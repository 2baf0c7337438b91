"""A tenant's most recent jobs, newest first: what the dashboard's job table shows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from service.db import jobs, models
from service.jobs import JobStatus


def recent(conn: Connection, tenant: str, limit: int,
           status: JobStatus | None = None) -> list[dict[str, Any]]:
    """Up to `limit` jobs of `tenant` (only those in `status`, if given), newest first; each
    with a `progress` from 0 to 1 (1 once final: a job is one unit of work until bulk jobs
    report their own)."""
    stmt = (
        select(jobs.c.id, jobs.c.status, models.c.name.label("model"), models.c.version,
               jobs.c.n_rows, jobs.c.queue, jobs.c.created_at, jobs.c.started_at,
               jobs.c.finished_at)
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.tenant == tenant)
        .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        .limit(limit)
    )
    if status is not None:
        stmt = stmt.where(jobs.c.status == status.value)
    out = []
    for row in conn.execute(stmt).mappings():
        job = dict(row)
        job["progress"] = 1.0 if JobStatus(job["status"]).is_final else 0.0
        out.append(job)
    return out
