"""Throughput (jobs and rows) and submit-to-finish latency per minute, from the jobs' own
timestamps.

Only jobs a worker (or the prediction cache) finished count: `succeeded` and `failed`.
Cancelled and expired jobs say nothing about how fast predq works. Rows count where they were
done: a small job's when it finished, a bulk job's chunk by chunk, so a bulk job of 300,000 rows
shows as the work it is, spread over the minutes it ran, and as one job when it ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Connection, case, extract, func, literal_column, select

from service.core.states import JobStatus
from service.core.times import utcnow
from service.store.db import job_chunks, jobs

Where = Sequence[ColumnElement[bool]]
COUNTED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
#: Jobs created longer than this before the window are left out, so the scan stays on the
#: (tenant, created_at) index; a job that waited a day to finish is not a latency figure anyway.
LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class Minute:
    start: datetime  # UTC, on the minute
    succeeded: int = 0
    failed: int = 0
    p50_ms: float | None = None  # None: nothing finished in this minute
    p99_ms: float | None = None
    rows: int = 0  # rows done: small jobs finished, bulk jobs' chunks committed

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


def per_minute(conn: Connection, tenant: str, minutes: int,
               now: datetime | None = None) -> list[Minute]:
    """One Minute for each of the last `minutes` minutes, oldest first; the last is the
    current, partial minute. Minutes in which nothing finished are there, with zeros."""
    now = now or utcnow()
    last = now.replace(second=0, microsecond=0)
    since = last - timedelta(minutes=minutes - 1)
    where: Where = (
        jobs.c.tenant == tenant, jobs.c.status.in_(COUNTED),
        jobs.c.created_at >= since - LOOKBACK, jobs.c.finished_at >= since)
    if conn.dialect.name == "postgresql":
        found = _aggregate_in_sql(conn, where)
    else:
        found = _aggregate_in_python(conn, where)
    rows = _rows_per_minute(conn, tenant, since)
    starts = [since + timedelta(minutes=i) for i in range(minutes)]
    return [replace(found.get(start, Minute(start)), rows=rows.get(start, 0)) for start in starts]


@dataclass(frozen=True)
class Rates:
    """Jobs and rows finished per second over the last RATE_WINDOW."""

    jobs_per_second: float
    rows_per_second: float


RATE_WINDOW = timedelta(seconds=60)


def rates(conn: Connection, tenant: str, now: datetime | None = None) -> Rates:
    """A sliding minute, not the current calendar minute, so the figure does not drop to zero
    each time a minute begins."""
    now = now or utcnow()
    since = now - RATE_WINDOW
    small_rows = case((jobs.c.n_chunks.is_(None), jobs.c.n_rows), else_=0)
    finished, rows = conn.execute(
        select(func.count(), func.coalesce(func.sum(small_rows), 0))
        .where(jobs.c.tenant == tenant, jobs.c.status.in_(COUNTED),
               jobs.c.created_at >= since - LOOKBACK, jobs.c.finished_at >= since)).one()
    rows = int(rows) + sum(n for _, n in _chunk_rows(conn, tenant, since))
    seconds = RATE_WINDOW.total_seconds()
    return Rates(round(finished / seconds, 3), round(rows / seconds, 3))


def _rows_per_minute(conn: Connection, tenant: str, since: datetime) -> dict[datetime, int]:
    out: dict[datetime, int] = {}
    small = (select(jobs.c.finished_at, jobs.c.n_rows)
             .where(jobs.c.tenant == tenant, jobs.c.status.in_(COUNTED),
                    jobs.c.n_chunks.is_(None), jobs.c.created_at >= since - LOOKBACK,
                    jobs.c.finished_at >= since))
    for finished, n in [*conn.execute(small), *_chunk_rows(conn, tenant, since)]:
        start = _utc(finished).replace(second=0, microsecond=0)
        out[start] = out.get(start, 0) + n
    return out


def _chunk_rows(conn: Connection, tenant: str, since: datetime) -> list[tuple[datetime, int]]:
    """(finished_at, rows) of the tenant's bulk chunks committed since `since`, whatever their
    job's state now (a chunk's rows were done even if the job failed later)."""
    stmt = (select(job_chunks.c.finished_at, job_chunks.c.n_rows)
            .join(jobs, jobs.c.id == job_chunks.c.job_id)
            .where(jobs.c.tenant == tenant, jobs.c.n_chunks.is_not(None),
                   jobs.c.created_at >= since - LOOKBACK, job_chunks.c.finished_at >= since))
    return [(finished, int(n)) for finished, n in conn.execute(stmt)]


def _aggregate_in_sql(conn: Connection, where: Where) -> dict[datetime, Minute]:
    """PostgreSQL groups and ranks itself, so a busy tenant's rows never leave the server."""
    # A literal, not a bound parameter: GROUP BY must repeat the select's expression exactly.
    minute = func.date_trunc(literal_column("'minute'"), jobs.c.finished_at).label("minute")
    latency = extract("epoch", jobs.c.finished_at - jobs.c.created_at) * 1000
    stmt = (
        select(minute,
               func.count().filter(jobs.c.status == JobStatus.SUCCEEDED.value),
               func.count().filter(jobs.c.status == JobStatus.FAILED.value),
               func.percentile_cont(0.5).within_group(latency),
               func.percentile_cont(0.99).within_group(latency))
        .where(*where)
        .group_by(minute)
    )
    out = {}
    for start, ok, failed, p50, p99 in conn.execute(stmt):
        start = _utc(start)
        out[start] = Minute(start, ok, failed, _ms(p50), _ms(p99))
    return out


def _aggregate_in_python(conn: Connection, where: Where) -> dict[datetime, Minute]:
    """SQLite has no percentile function: fetch the two timestamps and rank here."""
    stmt = select(jobs.c.status, jobs.c.created_at, jobs.c.finished_at).where(*where)
    groups: dict[datetime, tuple[list[float], list[int]]] = {}
    for status, created, finished in conn.execute(stmt):
        finished = _utc(finished)
        start = finished.replace(second=0, microsecond=0)
        latencies, counts = groups.setdefault(start, ([], [0, 0]))
        latencies.append((finished - _utc(created)).total_seconds() * 1000)
        counts[status != JobStatus.SUCCEEDED.value] += 1
    return {
        start: Minute(start, counts[0], counts[1], _ms(percentile(latencies, 0.5)),
                      _ms(percentile(latencies, 0.99)))
        for start, (latencies, counts) in groups.items()
    }


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont does."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; predq writes UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
