"""One presentation of a job: what `GET /v1/jobs/{id}`, the job list and the dashboard show,
with one progress figure (rows done of rows total) for small and bulk jobs alike."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, case, func, or_, select

from service.core.errors import InvalidInput, JobNotFound
from service.core.states import JobStatus
from service.core.times import as_utc, iso
from service.jobs import priorities
from service.store.db import job_chunks, jobs, models

# A bulk job is claimed chunk by chunk: its attempts are those of its most-claimed chunk (1
# when none was retried, 0 before the first claim), so `attempts` means the same for both.
_CHUNK_ATTEMPTS = (select(func.max(job_chunks.c.attempts))
                   .where(job_chunks.c.job_id == jobs.c.id).scalar_subquery())
_ATTEMPTS = case((jobs.c.n_chunks.is_(None), jobs.c.attempts),
                 else_=func.coalesce(_CHUNK_ATTEMPTS, 0)).label("attempts")
_COLUMNS = (
    jobs.c.id, jobs.c.status, jobs.c.n_rows, jobs.c.rows_done, jobs.c.error, _ATTEMPTS,
    jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at, jobs.c.queue, jobs.c.deadline,
    jobs.c.from_cache, jobs.c.retry_of, models.c.name.label("model"), models.c.version,
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
        "retry_of": row["retry_of"],
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
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A cursor's text: the last job's creation time in microseconds since 1970, a dot, its id.
#: Every string of this shape is a cursor (a page starts just past it), so the OpenAPI pattern
#: says exactly what is accepted.
CURSOR = re.compile(r"([0-9]{1,16})\.([0-9a-fA-F-]{1,36})")


@dataclass(frozen=True)
class Cursor:
    """Where a page of a list ended: the last job's creation time and id (the list's order),
    handed to the client as a token it sends back for the next page."""

    created_at: datetime
    id: str

    def token(self) -> str:
        micros = (as_utc(self.created_at) - EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor a token stands for; InvalidInput("cursor") for anything else."""
        found = CURSOR.fullmatch(token)
        if found is None:
            raise InvalidInput("cursor", "the `next` of the previous page, unchanged")
        micros, job_id = found.groups()
        return cls(EPOCH + timedelta(microseconds=int(micros)), job_id.lower())


@dataclass(frozen=True)
class Page:
    jobs: list[dict[str, Any]]
    next: Cursor | None  # None: this was the last page


def recent(conn: Connection, tenant: str, limit: int, where: JobFilter = JobFilter(),
           after: Cursor | None = None, oldest_first: bool = False) -> Page:
    """Up to `limit` jobs of `tenant` that match `where`, newest first (or oldest first),
    from just past `after`; and where the next page starts, if there is one."""
    order = (jobs.c.created_at, jobs.c.id) if oldest_first else \
        (jobs.c.created_at.desc(), jobs.c.id.desc())
    stmt = _of_tenant(tenant).order_by(*order).limit(limit + 1)
    for condition in _conditions(where):
        stmt = stmt.where(condition)
    if after is not None:
        later = (jobs.c.created_at > after.created_at) if oldest_first else \
            (jobs.c.created_at < after.created_at)
        beyond = (jobs.c.id > after.id) if oldest_first else (jobs.c.id < after.id)
        stmt = stmt.where(or_(later, and_(jobs.c.created_at == after.created_at, beyond)))
    rows = list(conn.execute(stmt).mappings())
    more = len(rows) > limit
    rows = rows[:limit]
    last = Cursor(as_utc(rows[-1]["created_at"]), rows[-1]["id"]) if more else None
    return Page([present(row) for row in rows], last)


def _conditions(where: JobFilter) -> list[Any]:
    found: list[Any] = []
    if where.status is not None:
        found.append(jobs.c.status == where.status.value)
    if where.model is not None:
        found.append(models.c.name == where.model)
    if where.queue is not None:
        found.append(jobs.c.queue == where.queue)
    if where.id_prefix is not None:
        found.append(jobs.c.id.startswith(where.id_prefix, autoescape=True))
    if where.since is not None:
        found.append(jobs.c.created_at >= where.since)
    if where.until is not None:
        found.append(jobs.c.created_at < where.until)
    return found
