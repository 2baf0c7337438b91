"""Queue depth over time, for the dashboard's chart: every SAMPLE_EVERY seconds one sample of
each predict queue's waiting work (jobs, bulk chunks, rows) and its oldest job's age, kept in
Redis for the last hour. The reconciler takes the samples (it runs every few seconds on some
worker; a Redis key makes one sample per period whichever worker runs it), from SQL, the
truth. Figures of the installation: they name no tenant."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis
from sqlalchemy import Connection, func, select

from service.core.messaging import PREDICT_QUEUES
from service.core.states import JobStatus
from service.core.times import as_utc, utcnow
from service.store.db import job_chunks, jobs

HISTORY = "predq:queues:history"  # list, newest first: JSON samples
MARK = "predq:queues:sampled"
SAMPLE_EVERY = 10  # seconds
KEEP = 360  # samples: an hour


@dataclass(frozen=True)
class Depth:
    jobs: int = 0  # queued jobs, single and bulk
    chunks: int = 0  # bulk chunks not done yet, of queued or running jobs (oldest: since stored)
    rows: int = 0  # rows of queued single jobs and of those chunks
    oldest_age_seconds: float | None = None  # the oldest queued job's wait


def due(client: redis.Redis) -> bool:
    """Whether this period's sample is still to take (and this caller takes it)."""
    return bool(client.set(MARK, 1, nx=True, ex=SAMPLE_EVERY))


def measure(conn: Connection) -> dict[str, Depth]:
    """Each predict queue's waiting work now."""
    now = utcnow()
    found = {queue: Depth() for queue in PREDICT_QUEUES}
    queued = (select(jobs.c.queue, func.count(), func.sum(jobs.c.n_rows),
                     func.min(jobs.c.created_at))
              .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.n_chunks.is_(None))
              .group_by(jobs.c.queue))
    for queue, count, rows, oldest in conn.execute(queued):
        age = round((now - as_utc(oldest)).total_seconds(), 1) if oldest else None
        found[queue] = Depth(int(count), 0, int(rows or 0), age)
    chunks = (select(jobs.c.queue, func.count(func.distinct(jobs.c.id)), func.count(),
                     func.sum(job_chunks.c.n_rows), func.min(job_chunks.c.created_at))
              .join(jobs, jobs.c.id == job_chunks.c.job_id)
              .where(job_chunks.c.status != "done",
                     jobs.c.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
              .group_by(jobs.c.queue))
    for queue, n_jobs, count, rows, oldest in conn.execute(chunks):
        was = found.get(queue, Depth())
        age = round((now - as_utc(oldest)).total_seconds(), 1) if oldest else None
        ages = [a for a in (was.oldest_age_seconds, age) if a is not None]
        found[queue] = Depth(was.jobs + int(n_jobs), int(count), was.rows + int(rows or 0),
                             max(ages) if ages else None)
    return found


def record(client: redis.Redis, depths: dict[str, Depth], at: float | None = None) -> None:
    sample = {"at": at or time.time(), "queues": {q: asdict(d) for q, d in depths.items()}}
    pipe = client.pipeline(transaction=False)
    pipe.lpush(HISTORY, json.dumps(sample))
    pipe.ltrim(HISTORY, 0, KEEP - 1)
    pipe.execute()


def read(client: redis.Redis, minutes: int, now: float | None = None) -> list[dict[str, Any]]:
    """The samples of the last `minutes`, oldest first."""
    since = (now or time.time()) - 60 * minutes
    raw: list[bytes] = client.lrange(HISTORY, 0, minutes * 60 // SAMPLE_EVERY + 1)  # type: ignore[assignment]
    samples = [json.loads(item) for item in raw]
    return [s for s in reversed(samples) if s["at"] >= since]
