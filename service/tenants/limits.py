"""Per-tenant rate limits: requests per second and rows per minute, counted in Redis so every
API process, worker and host shares them (the `limits` package's storage and sliding-window
strategy).

A tenant's limits come from the `tenant_limits` table (`predq limits set`), else from the
settings; 0 means unlimited. When Redis is down the counts fall back to each process's memory:
limits hold roughly, submissions go on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisSentinelStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy import Connection, Engine, delete, insert, select

from service.core.errors import InvalidInput, TooManyRequests
from service.core.redisurl import sentinels, tcp_keepalive
from service.store.db import tenant_limits

log = logging.getLogger(__name__)


class RateLimited(TooManyRequests):
    """Over the tenant's quota: retry after `retry_after` seconds."""

    code = "rate_limited"


@dataclass(frozen=True)
class Limits:
    requests_per_second: float  # 0: unlimited
    rows_per_minute: int  # 0: unlimited


def set_limits(conn: Connection, tenant: str, requests_per_second: float | None = None,
               rows_per_minute: int | None = None, retention: float | None = None,
               weight: float | None = None) -> None:
    """Give `tenant` its own limits: each value given replaces the tenant's (0: unlimited),
    the others stay (a tenant without a row of its own has the settings' defaults); `weight`
    is its share of the bulk processes beside other tenants' bulk jobs (default 1)."""
    from service.core.times import utcnow

    if requests_per_second is not None and not (
            requests_per_second == 0 or 1 <= requests_per_second <= 1e6):
        raise InvalidInput("requests_per_second", "0 (unlimited) or 1 to 1,000,000")
    if rows_per_minute is not None and not 0 <= rows_per_minute <= 10**12:
        raise InvalidInput("rows_per_minute", "0 (unlimited) or a positive number")
    if retention is not None and not 60 <= retention <= 10 * 365 * 86400:
        raise InvalidInput("retention", "between a minute and 10 years")
    if weight is not None and not 0.01 <= weight <= 1000:
        raise InvalidInput("weight", "between 0.01 and 1,000 (1: an equal share)")
    row = conn.execute(select(tenant_limits).where(
        tenant_limits.c.tenant == tenant)).mappings().first()
    values = dict(row) if row else {"tenant": tenant, "requests_per_second": None,
                                    "rows_per_minute": None, "retention": None,
                                    "weight": None}
    given = {"requests_per_second": requests_per_second, "rows_per_minute": rows_per_minute,
             "retention": None if retention is None else int(retention), "weight": weight}
    values.update({k: v for k, v in given.items() if v is not None}, updated_at=utcnow())
    conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant == tenant))
    conn.execute(insert(tenant_limits), values)


def clear_limits(conn: Connection, tenant: str) -> int:
    return conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant == tenant)).rowcount


def all_limits(conn: Connection
               ) -> dict[str, tuple[float | None, int | None, int | None, float | None]]:
    """Every tenant's own limits: (requests/s, rows/minute, retention seconds, weight)."""
    rows = conn.execute(select(tenant_limits).order_by(tenant_limits.c.tenant)).mappings()
    return {r["tenant"]: (r["requests_per_second"], r["rows_per_minute"], r["retention"],
                          r["weight"]) for r in rows}


class TenantLimits:
    """Each tenant's limits, re-read from SQL at most every `ttl` seconds per process."""

    def __init__(self, engine: Engine, default: Limits, ttl: float = 2.0) -> None:
        self._engine = engine
        self._default = default
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Limits]] = {}
        self._lock = threading.Lock()

    def of(self, tenant: str) -> Limits:
        hit = self._cache.get(tenant)  # a dict read needs no lock
        now = time.monotonic()
        if hit and now - hit[0] < self._ttl:
            return hit[1]
        if hit:
            # One request re-reads; the others go on with what it replaces until it has. Without
            # this, every request in flight when the entry expired took a connection of its own
            # (measured: a pool past its size, connections opened and closed every 2 s).
            with self._lock:
                if self._cache.get(tenant) is hit:
                    self._cache[tenant] = (now, hit[1])
                else:
                    return self.of(tenant)
        with self._engine.connect() as conn:
            row = conn.execute(select(tenant_limits).where(
                tenant_limits.c.tenant == tenant)).mappings().first()
        rps = row["requests_per_second"] if row else None
        rows = row["rows_per_minute"] if row else None
        found = Limits(self._default.requests_per_second if rps is None else rps,
                       self._default.rows_per_minute if rows is None else rows)
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[tenant] = (now, found)
        return found


class Quotas:
    """Counts a tenant's requests and rows against its limits, in Redis (or, while Redis is
    down, in this process's memory). A tenant without limits costs a dict lookup."""

    def __init__(self, redis_url: str, limits: TenantLimits) -> None:
        self.limits = limits
        self._shared = SlidingWindowCounterRateLimiter(_storage(redis_url))
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())

    def _hit(self, item: RateLimitItem, tenant: str, kind: str, cost: int = 1
             ) -> tuple[bool, float, int]:
        """(allowed, reset time, remaining), counted in Redis, or in memory if Redis fails."""
        for strategy in (self._shared, self._memory):
            try:
                allowed = strategy.hit(item, kind, tenant, cost=cost)
                reset, remaining = strategy.get_window_stats(item, kind, tenant)
                return allowed, reset, remaining
            except Exception as exc:  # noqa: BLE001 - fall back to this process's count
                log.warning("rate limit store unavailable (%s); counting in memory", exc)
        return True, time.time(), 0

    def take_request(self, tenant: str) -> tuple[dict[str, str], RateLimited | None]:
        """Count one request of `tenant`: the X-RateLimit-* headers to answer with, and the
        429 to answer if it is over its rate."""
        rps = self.limits.of(tenant).requests_per_second
        if rps <= 0:
            return {}, None
        amount = max(1, math.floor(rps))
        allowed, reset, remaining = self._hit(RateLimitItemPerSecond(amount), tenant,
                                              "requests")
        headers = {"X-RateLimit-Limit": str(amount),
                   "X-RateLimit-Remaining": str(max(0, remaining)),
                   "X-RateLimit-Reset": str(math.ceil(reset))}
        if allowed:
            return headers, None
        return headers, RateLimited(f"{tenant} is over its rate limit of {amount} per 1 second; "
                                    "see Retry-After", max(1, math.ceil(reset - time.time())))

    def take_rows(self, tenant: str, rows: int) -> None:
        """Count `rows` against the tenant's rows per minute, or raise RateLimited (429, or
        400 for a job that could never fit)."""
        per_minute = self.limits.of(tenant).rows_per_minute
        if per_minute <= 0:
            return
        if rows > per_minute:
            raise InvalidInput("inputs", f"{rows} rows; this tenant may send at most "
                                         f"{per_minute} rows per minute: split the job")
        allowed, reset, _remaining = self._hit(RateLimitItemPerMinute(per_minute), tenant,
                                               "rows", rows)
        if not allowed:
            raise RateLimited(f"{tenant} is over its quota of {per_minute} rows per minute",
                              max(1, math.ceil(reset - time.time())))


def _storage(redis_url: str) -> Storage:
    """The `limits` storage on predq's Redis, in that package's spelling of REDIS_URL. A
    Sentinel group's counts are read from its master too: a replica's may lag behind."""
    timeouts: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    group = sentinels(redis_url)
    if group is not None:
        hosts = ",".join(f"{host}:{port}" for host, port in group.hosts)
        # `limits` would send the servers' password to the sentinels too: say theirs.
        reach = {**group.sentinel_kwargs(), "password": group.sentinel_password}
        master: dict[str, Any] = {"db": group.db, "password": group.password}
        return RedisSentinelStorage(
            f"redis+sentinel://{hosts}/{group.service}", use_replicas=False,
            sentinel_kwargs=reach, **master, **timeouts, **tcp_keepalive())
    if redis_url.startswith("unix://"):
        return RedisStorage("redis+unix://" + redis_url[len("unix://"):], **timeouts)
    return RedisStorage(redis_url, **timeouts, **tcp_keepalive())
