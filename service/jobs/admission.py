"""Back-pressure: refuse work with 429 and a Retry-After before a queue grows without bound.

Depth is the number of queued jobs in SQL (the truth), read per API process at most every
`refresh` seconds, plus what this process accepted since; the drain rate comes from the
workers' counters in Redis (`admission.DRAINED`). Retry-After is the time the workers need to
drain the excess at that rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy import Engine, func, select

from service.core.errors import TooManyRequests
from service.core.messaging import PREDICT_QUEUES
from service.core.states import JobStatus
from service.core.times import as_utc, utcnow
from service.ops import metrics
from service.store.db import jobs

DRAINED = "predq:drained"  # hash: queue -> jobs taken off it, ever (workers count)
NO_DRAIN_RETRY_AFTER = 30  # seconds, when no worker has taken a job lately


class QueueFull(TooManyRequests):
    code = "queue_full"


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_age_seconds: float | None
    drain_per_second: float


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
                )
                for queue in PREDICT_QUEUES
            }

    def _retry_after(self, queue: str, excess: int) -> int:
        rate = self._rate.get(queue, 0.0)
        if rate <= 0:
            return NO_DRAIN_RETRY_AFTER
        return min(300, max(1, math.ceil(excess / rate)))

    def _maybe_refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._read_at < self._refresh:
                return
            self._read_at = now  # one thread refreshes; the others use the last reading
        depth: dict[str, int] = defaultdict(int)
        tenant_depth: dict[tuple[str, str], int] = {}
        oldest: dict[str, datetime] = {}
        stmt = (select(jobs.c.queue, jobs.c.tenant, func.count(), func.min(jobs.c.created_at))
                .where(jobs.c.status == JobStatus.QUEUED.value)
                .group_by(jobs.c.queue, jobs.c.tenant))
        with self._engine.connect() as conn:
            for queue, tenant, count, first in conn.execute(stmt):
                depth[queue] += count
                tenant_depth[(queue, tenant)] = count
                if queue not in oldest or first < oldest[queue]:
                    oldest[queue] = first
        try:
            raw: dict[bytes, bytes] = self._redis.hgetall(DRAINED)  # type: ignore[assignment]
            drained = {k.decode(): int(v) for k, v in raw.items()}
        except redis.RedisError:
            drained = {}
        with self._lock:
            self._depth, self._tenant_depth, self._oldest = dict(depth), tenant_depth, oldest
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


def _age(now: datetime, then: datetime) -> float:
    then = as_utc(then)
    return round(max(0.0, (now - then).total_seconds()), 3)
