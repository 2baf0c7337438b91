"""One presentation of a job: what `GET /v1/jobs/{id}`, the job list and the dashboard show,
with one progress figure (rows done of rows total) for small and bulk jobs alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, select

from service.core.errors import JobNotFound
from service.core.states import JobStatus
from service.core.times import iso
from service.jobs import priorities
from service.store.db import jobs, models

_COLUMNS = (
    jobs.c.id, jobs.c.status, jobs.c.n_rows, jobs.c.rows_done, jobs.c.error, jobs.c.attempts,
    jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at, jobs.c.queue, jobs.c.deadline,
    jobs.c.from_cache, models.c.name.label("model"), models.c.version,
)


def links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}


def present(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The job as its tenant sees it. A small job's rows are done when it succeeds; a bulk
    job's as its chunks commit; a failed, cancelled or expired job keeps what it got done."""
    status = row["status"]
    total = row["n_rows"]
    done = total if status == JobStatus.SUCCEEDED else (row["rows_done"] or 0)
    out: dict[str, Any] = {
        "id": row["id"],
        "status": status,
        "model": row["model"],
        "version": row["version"],
        "rows": total,
        "rows_total": total,
        "rows_done": done,
        "percent": round(100.0 * done / total, 2) if total else 100.0,
        "attempts": row["attempts"],
        "priority": priorities.name_of(row["queue"]),
        "from_cache": bool(row["from_cache"]),
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "deadline": iso(row["deadline"]),
        "links": links(row["id"]),
    }
    if row["error"] is not None:
        out["error"] = row["error"]
    return out


def _of_tenant(tenant: str) -> Select[Any]:
    return (select(*_COLUMNS).join(models, models.c.id == jobs.c.model_id)
            .where(jobs.c.tenant == tenant))


def get(conn: Connection, tenant: str, job_id: str) -> dict[str, Any]:
    """One job of `tenant`; another tenant's id is indistinguishable from an unknown one."""
    row = conn.execute(_of_tenant(tenant).where(jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise JobNotFound(job_id)
    return present(row)


@dataclass(frozen=True)
class JobFilter:
    """Which of a tenant's jobs a list shows; None: any."""

    status: JobStatus | None = None
    model: str | None = None  # a model's name, any version
    queue: str | None = None  # a priority's queue
    id_prefix: str | None = None  # the start of a job id (a whole id finds that job)


def recent(conn: Connection, tenant: str, limit: int,
           where: JobFilter = JobFilter()) -> list[dict[str, Any]]:
    """Up to `limit` jobs of `tenant` that match `where`, newest first."""
    stmt = _of_tenant(tenant).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    if where.status is not None:
        stmt = stmt.where(jobs.c.status == where.status.value)
    if where.model is not None:
        stmt = stmt.where(models.c.name == where.model)
    if where.queue is not None:
        stmt = stmt.where(jobs.c.queue == where.queue)
    if where.id_prefix is not None:
        stmt = stmt.where(jobs.c.id.startswith(where.id_prefix, autoescape=True))
    return [present(row) for row in conn.execute(stmt).mappings()]
