"""A job as the dashboard's job page shows it: the job, the steps it went through, a bulk job's
chunks, and the first rows of its result, read for one tenant (another tenant's job is
missing, as everywhere)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, select

from service.core.states import JobStatus
from service.core.times import iso
from service.jobs import chunkresults, payloads, view
from service.store.db import job_chunks, jobs, models

PREVIEW_ROWS = 10
FINAL = {s.value for s in JobStatus} - {JobStatus.QUEUED.value, JobStatus.RUNNING.value}


def overview(conn: Connection, tenant: str, job_id: str) -> dict[str, Any]:
    """The job, its timeline, its chunks (bulk jobs; else None) and a result preview (once
    it succeeded; else None). JobNotFound for an unknown or another tenant's id."""
    job = view.get(conn, tenant, job_id)
    row = conn.execute(
        select(jobs.c.published_at, jobs.c.n_chunks, jobs.c.result, jobs.c.worker,
               jobs.c.input_format, jobs.c.input_ref, models.c.labels, models.c.n_features)
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
    final = job["status"] in FINAL
    bulk = None if row.n_chunks is None else _chunks(conn, job_id, row.n_chunks, final)
    return {"job": job, "timeline": timeline, "chunks": bulk, "preview": preview,
            "input": _input(row, job["rows"]),
            "workers": _workers(conn, job_id) if row.n_chunks is not None else
            [row.worker] if row.worker else []}


def _input(row: Any, n_rows: int) -> dict[str, Any]:
    """What the job was given: how it came (JSON rows, an upload, a file by reference), in
    which format, and its size in rows and columns."""
    if row.input_ref is not None:
        source, fmt = "file", json.loads(row.input_ref).get("format")
    elif row.n_chunks is not None:
        source, fmt = "upload", row.input_format
    else:
        source, fmt = "json", "json"
    return {"source": source, "format": fmt, "rows": n_rows, "columns": row.n_features}


def _workers(conn: Connection, job_id: str) -> list[str]:
    """The workers that claimed a bulk job's chunks (each chunk's last claim)."""
    stmt = (select(job_chunks.c.worker).where(job_chunks.c.job_id == job_id,
                                              job_chunks.c.worker.is_not(None))
            .group_by(job_chunks.c.worker).order_by(job_chunks.c.worker))
    return list(conn.execute(stmt).scalars())


def _preview(conn: Connection, job_id: str, stored: str | None, labels: list[Any] | None,
             n_rows: int) -> dict[str, Any]:
    """The first rows only: a bulk job's first chunk is read, never the whole result."""
    first = json.loads(stored) if stored is not None else \
        payloads.as_lists(next(chunkresults.results(conn, job_id, page=1), {}))
    probabilities = first.get("probabilities")
    return {
        "rows": n_rows,
        "predictions": first.get("predictions", [])[:PREVIEW_ROWS],
        "probabilities": None if probabilities is None else probabilities[:PREVIEW_ROWS],
        "labels": labels,
    }


def _chunks(conn: Connection, job_id: str, n_chunks: int, final: bool) -> dict[str, int]:
    """A bulk job's chunks by state. Once the job has ended (failed, cancelled, expired) no
    chunk of it runs or waits any more, whatever its row still says until the sweep stamps
    it: those count as `stopped`."""
    counts = {"pending": 0, "running": 0, "done": 0}
    attempts = 0
    stmt = (select(job_chunks.c.status, func.count(), func.coalesce(func.sum(
        job_chunks.c.attempts), 0)).where(job_chunks.c.job_id == job_id)
        .group_by(job_chunks.c.status))
    for status, n, tries in conn.execute(stmt):
        counts[status] = int(n)
        attempts += int(tries)
    stopped = 0
    if final:
        stopped = max(0, n_chunks - counts["done"])
        counts["pending"] = counts["running"] = 0
    return {"total": n_chunks, **counts, "stopped": stopped, "attempts": attempts}
