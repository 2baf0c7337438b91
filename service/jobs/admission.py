"""Back-pressure: refuse work with 429 and a Retry-After before a queue grows without bound.

Depth is what waits in SQL (the truth), per queue: queued single jobs, and bulk jobs with
chunks not yet predicted (a bulk job is `running` from its first chunk, but what it has left
waits all the same); read per API process at most every `refresh` seconds, plus what this
process accepted since. Each queue's figures also count the waiting chunks and rows, and the
age of the oldest waiting job or chunk. The drain rate comes from the workers' counters in
Redis (`admission.DRAINED`); Retry-After is the time the workers need to drain the excess at
that rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import Engine, func, select

from service.core.errors import TooManyRequests
from service.core.messaging import PREDICT_QUEUES
from service.core.states import JobStatus
from service.core.times import as_utc, utcnow
from service.ops import metrics
from service.store.db import job_chunks, jobs

DRAINED = "predq:drained"  # hash: queue -> jobs taken off it, ever (workers count)
NO_DRAIN_RETRY_AFTER = 30  # seconds, when no worker has taken a job lately


class QueueFull(TooManyRequests):
    code = "queue_full"


@dataclass(frozen=True)
class QueueStats:
    depth: int  # jobs waiting: queued single jobs, and bulk jobs with chunks waiting
    oldest_age_seconds: float | None  # the oldest waiting job or chunk
    drain_per_second: float
    chunks: int = 0  # bulk chunks waiting (not yet claimed by a worker)
    rows: int = 0  # rows waiting: of queued single jobs and of waiting chunks


@dataclass
class _Reading:
    """One read of what waits, per queue and per (queue, tenant)."""

    depth: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tenant_depth: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest: dict[str, datetime] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tenant_rows: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, queue: str, tenant: str, jobs: int, rows: int, first: datetime | None,
            chunks: int = 0) -> None:
        self.depth[queue] += jobs
        self.tenant_depth[(queue, tenant)] = self.tenant_depth.get((queue, tenant), 0) + jobs
        self.chunks[queue] += chunks
        self.rows[queue] += rows
        self.tenant_rows[(queue, tenant)] = self.tenant_rows.get((queue, tenant), 0) + rows
        if first is not None and (queue not in self.oldest or first < self.oldest[queue]):
            self.oldest[queue] = first


class QueueGauge:
    """Per-process view of queue depths, per queue and per tenant, and of drain rates."""

    def __init__(self, engine: Engine, client: redis.Redis, limits: dict[str, int],
                 tenant_share: float, refresh: float = 0.5) -> None:
        self._engine = engine
        self._redis = client
        self._limits = limits
        self._tenant_share = tenant_share
        self._refresh = refresh
        self._lock = threading.Lock()
        self._read_at = -1e9
        self._reading = _Reading()
        self._depth: dict[str, int] = {}
        self._tenant_depth: dict[tuple[str, str], int] = {}
        self._oldest: dict[str, datetime] = {}
        self._drained: dict[str, tuple[float, int]] = {}  # queue -> (when, counter)
        self._rate: dict[str, float] = {}  # jobs per second, smoothed

    def admit(self, queue: str, tenant: str, n_jobs: int = 1) -> None:
        """Count `n_jobs` into the queue, or raise QueueFull if it (or the tenant's share of
        it) is full. Called before anything is written."""
        self._maybe_refresh()
        limit = self._limits.get(queue)
        if not limit:
            return
        tenant_limit = max(1, int(limit * self._tenant_share))
        with self._lock:
            depth = self._depth.get(queue, 0)
            mine = self._tenant_depth.get((queue, tenant), 0)
            if depth + n_jobs > limit:
                metrics.REJECTED_JOBS.labels(queue, "queue_full").inc(n_jobs)
                raise QueueFull(f"queue {queue} is full ({depth} jobs waiting, limit {limit}); "
                                "retry later", self._retry_after(queue, depth + n_jobs - limit))
            if mine + n_jobs > tenant_limit:
                metrics.REJECTED_JOBS.labels(queue, "tenant_share").inc(n_jobs)
                raise QueueFull(
                    f"this tenant has {mine} jobs waiting in {queue}, its share of the queue "
                    f"is {tenant_limit}; retry later",
                    self._retry_after(queue, mine + n_jobs - tenant_limit))
            self._depth[queue] = depth + n_jobs
            self._tenant_depth[(queue, tenant)] = mine + n_jobs

    def stats(self) -> dict[str, QueueStats]:
        self._maybe_refresh(force=True)
        now = utcnow()
        with self._lock:
            return {
                queue: QueueStats(
                    self._depth.get(queue, 0),
                    _age(now, self._oldest[queue]) if queue in self._oldest else None,
                    round(self._rate.get(queue, 0.0), 1),
                    self._reading.chunks.get(queue, 0), self._reading.rows.get(queue, 0),
                )
                for queue in PREDICT_QUEUES
            }

    def _retry_after(self, queue: str, excess: int) -> int:
        rate = self._rate.get(queue, 0.0)
        if rate <= 0:
            return NO_DRAIN_RETRY_AFTER
        return min(300, max(1, math.ceil(excess / rate)))

    def waiting(self, tenant: str) -> dict[str, tuple[int, int]]:
        """The tenant's jobs and rows waiting per queue, as last read."""
        self._maybe_refresh()
        with self._lock:
            reading = self._reading
            return {queue: (jobs, reading.tenant_rows.get((queue, tenant), 0))
                    for (queue, who), jobs in reading.tenant_depth.items() if who == tenant}

    def tenant_rows(self) -> dict[tuple[str, str], int]:
        """Rows waiting per (queue, tenant), as last read."""
        self._maybe_refresh()
        with self._lock:
            return dict(self._reading.tenant_rows)

    def _maybe_refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._read_at < self._refresh:
                return
            self._read_at = now  # one thread refreshes; the others use the last reading
        reading = _Reading()
        with self._engine.connect() as conn:
            for queue, tenant, count, rows, first in conn.execute(_QUEUED):
                reading.add(queue, tenant, count, int(rows or 0), first)
            for queue, tenant, n_jobs, chunks, rows, first in conn.execute(_CHUNKS_WAITING):
                reading.add(queue, tenant, n_jobs, int(rows or 0), first, chunks)
        try:
            raw: dict[bytes, bytes] = self._redis.hgetall(DRAINED)  # type: ignore[assignment]
            drained = {k.decode(): int(v) for k, v in raw.items()}
        except redis.RedisError:
            drained = {}
        with self._lock:
            self._reading = reading
            self._depth, self._tenant_depth = dict(reading.depth), reading.tenant_depth
            self._oldest = reading.oldest
            self._update_rates(now, drained)

    def _update_rates(self, now: float, drained: dict[str, int]) -> None:
        for queue, counter in drained.items():
            if queue in self._drained:
                then, before = self._drained[queue]
                if now - then >= 1.0:  # a rate over at least a second, smoothed
                    sample = max(0, counter - before) / (now - then)
                    last = self._rate.get(queue, sample)
                    self._rate[queue] = 0.5 * last + 0.5 * sample
                    self._drained[queue] = (now, counter)
            else:
                self._drained[queue] = (now, counter)


# Queued single jobs, and bulk jobs' chunks not yet claimed, per queue and tenant.
_QUEUED = (select(jobs.c.queue, jobs.c.tenant, func.count(), func.sum(jobs.c.n_rows),
                  func.min(jobs.c.created_at))
           .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.n_chunks.is_(None))
           .group_by(jobs.c.queue, jobs.c.tenant))
_CHUNKS_WAITING = (
    select(jobs.c.queue, jobs.c.tenant, func.count(func.distinct(jobs.c.id)), func.count(),
           func.sum(job_chunks.c.n_rows), func.min(job_chunks.c.created_at))
    .select_from(job_chunks.join(jobs, jobs.c.id == job_chunks.c.job_id))
    .where(jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
           jobs.c.n_chunks.is_not(None), job_chunks.c.status == "pending")
    .group_by(jobs.c.queue, jobs.c.tenant))


def _age(now: datetime, then: datetime) -> float:
    then = as_utc(then)
    return round(max(0.0, (now - then).total_seconds()), 3)
