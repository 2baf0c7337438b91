"""A job as the dashboard's job page shows it: the job, the steps it went through, a bulk job's
chunks, and the first rows of its result, read for one tenant (another tenant's job is
missing, as everywhere)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, select

from service.core.states import JobStatus
from service.core.times import iso
from service.jobs import chunks, payloads, view
from service.store.db import job_chunks, jobs, models

PREVIEW_ROWS = 10


def overview(conn: Connection, tenant: str, job_id: str) -> dict[str, Any]:
    """The job, its timeline, its chunks (bulk jobs; else None) and a result preview (once
    it succeeded; else None). JobNotFound for an unknown or another tenant's id."""
    job = view.get(conn, tenant, job_id)
    row = conn.execute(
        select(jobs.c.published_at, jobs.c.n_chunks, jobs.c.result, models.c.labels)
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.id == job_id, jobs.c.tenant == tenant)).one()
    timeline = [
        {"step": "created", "at": job["created_at"]},
        {"step": "published", "at": iso(row.published_at)},
        {"step": "started", "at": job["started_at"]},
        {"step": "finished", "at": job["finished_at"]},
    ]
    preview = None
    if job["status"] == JobStatus.SUCCEEDED.value:
        preview = _preview(conn, job_id, row.result, row.labels, job["rows"])
    bulk = None if row.n_chunks is None else _chunks(conn, job_id, row.n_chunks)
    return {"job": job, "timeline": timeline, "chunks": bulk, "preview": preview}


def _preview(conn: Connection, job_id: str, stored: str | None, labels: list[Any] | None,
             n_rows: int) -> dict[str, Any]:
    """The first rows only: a bulk job's first chunk is read, never the whole result."""
    first = json.loads(stored) if stored is not None else \
        payloads.as_lists(next(chunks.results(conn, job_id, page=1), {}))
    probabilities = first.get("probabilities")
    return {
        "rows": n_rows,
        "predictions": first.get("predictions", [])[:PREVIEW_ROWS],
        "probabilities": None if probabilities is None else probabilities[:PREVIEW_ROWS],
        "labels": labels,
    }


def _chunks(conn: Connection, job_id: str, n_chunks: int) -> dict[str, int]:
    counts = {"pending": 0, "running": 0, "done": 0}
    attempts = 0
    stmt = (select(job_chunks.c.status, func.count(), func.coalesce(func.sum(
        job_chunks.c.attempts), 0)).where(job_chunks.c.job_id == job_id)
        .group_by(job_chunks.c.status))
    for status, n, tries in conn.execute(stmt):
        counts[status] = int(n)
        attempts += int(tries)
    return {"total": n_chunks, **counts, "attempts": attempts}
