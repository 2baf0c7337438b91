"""Per-tenant rate limits: requests per second and rows per minute, counted in Redis so every
API process and host shares them (flask-limiter over the `limits` package).

A tenant's limits come from the `tenant_limits` table (`predq limits set`), else from the
settings; 0 means unlimited. When Redis is down the counts fall back to each process's memory
(flask-limiter's fallback): limits hold roughly, submissions go on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy import Connection, Engine, delete, insert, select

from service.db import tenant_limits
from service.errors import InvalidInput, TooManyRequests

log = logging.getLogger(__name__)


class RateLimited(TooManyRequests):
    """Over the tenant's quota: retry after `retry_after` seconds."""

    code = "rate_limited"


@dataclass(frozen=True)
class Limits:
    requests_per_second: float  # 0: unlimited
    rows_per_minute: int  # 0: unlimited


def set_limits(conn: Connection, tenant: str, requests_per_second: float | None = None,
               rows_per_minute: int | None = None, retention: float | None = None) -> None:
    """Give `tenant` its own limits: each value given replaces the tenant's (0: unlimited),
    the others stay (a tenant without a row of its own has the settings' defaults)."""
    from service.jobs import utcnow

    if requests_per_second is not None and not (
            requests_per_second == 0 or 1 <= requests_per_second <= 1e6):
        raise InvalidInput("requests_per_second", "0 (unlimited) or 1 to 1,000,000")
    if rows_per_minute is not None and not 0 <= rows_per_minute <= 10**12:
        raise InvalidInput("rows_per_minute", "0 (unlimited) or a positive number")
    if retention is not None and not 60 <= retention <= 10 * 365 * 86400:
        raise InvalidInput("retention", "between a minute and 10 years")
    row = conn.execute(select(tenant_limits).where(
        tenant_limits.c.tenant == tenant)).mappings().first()
    values = dict(row) if row else {"tenant": tenant, "requests_per_second": None,
                                    "rows_per_minute": None, "retention": None}
    given = {"requests_per_second": requests_per_second, "rows_per_minute": rows_per_minute,
             "retention": None if retention is None else int(retention)}
    values.update({k: v for k, v in given.items() if v is not None}, updated_at=utcnow())
    conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant == tenant))
    conn.execute(insert(tenant_limits), values)


def clear_limits(conn: Connection, tenant: str) -> int:
    return conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant == tenant)).rowcount


def all_limits(conn: Connection) -> dict[str, tuple[float | None, int | None, int | None]]:
    rows = conn.execute(select(tenant_limits).order_by(tenant_limits.c.tenant)).mappings()
    return {r["tenant"]: (r["requests_per_second"], r["rows_per_minute"], r["retention"])
            for r in rows}


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
    """The app's limits: a per-tenant request rate on every authenticated /v1 call, and
    `take_rows` for the rows each accepted job will cost a worker.

    flask-limiter gives the Redis storage and the sliding-window strategy; predq calls the
    strategy itself from one before_request hook instead of flask-limiter's per-request
    machinery, which resolved and parsed the limits on every request, limited tenant or not
    (measured: ~20% of the API's CPU per job). A tenant without limits costs a dict lookup.
    If Redis fails, counting goes on in this process's memory until it is back."""

    def __init__(self, app: Flask, redis_url: str, limits: TenantLimits) -> None:
        self.limits = limits
        self.limiter = Limiter(
            key_func=_tenant_or_nobody, app=app, storage_uri=_storage_uri(redis_url),
            storage_options={"socket_timeout": 2, "socket_connect_timeout": 2},
            strategy="sliding-window-counter", key_prefix="predq:limits",
        )
        _unhook(app, self.limiter)
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        app.before_request(self._check_request)
        app.after_request(self._headers)

    def _strategy(self) -> Any:
        return self.limiter.limiter

    def _hit(self, item: RateLimitItem, tenant: str, kind: str, cost: int = 1
             ) -> tuple[bool, float, int]:
        """(allowed, reset time, remaining), counted in Redis, or in memory if Redis fails."""
        for strategy in (self._strategy(), self._memory):
            try:
                allowed = strategy.hit(item, kind, tenant, cost=cost)
                reset, remaining = strategy.get_window_stats(item, kind, tenant)
                return allowed, reset, remaining
            except Exception as exc:  # noqa: BLE001 - fall back to this process's count
                log.warning("rate limit store unavailable (%s); counting in memory", exc)
        return True, time.time(), 0

    def _check_request(self) -> None:
        if not request.path.startswith("/v1/"):
            return
        tenant = _tenant_or_nobody()  # authenticates once; the view reuses it
        if not tenant:
            return  # the view answers 401 (or 503)
        rps = self.limits.of(tenant).requests_per_second
        if rps <= 0:
            return
        amount = max(1, math.floor(rps))
        allowed, reset, remaining = self._hit(RateLimitItemPerSecond(amount), tenant,
                                              "requests")
        retry_after = max(1, math.ceil(reset - time.time()))
        g.rate_headers = {"X-RateLimit-Limit": str(amount),
                          "X-RateLimit-Remaining": str(max(0, remaining)),
                          "X-RateLimit-Reset": str(math.ceil(reset))}
        if not allowed:
            raise RateLimited(f"{tenant} is over its rate limit of {amount} per 1 second; see "
                              "Retry-After", retry_after)

    def _headers(self, response: Response) -> Response:
        headers = g.get("rate_headers")
        if headers:
            response.headers.update(headers)
        return response

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


def _unhook(app: Flask, limiter: Limiter) -> None:
    """Take flask-limiter's own per-request hooks off the app (it has no switch for that):
    predq keeps its storage and strategy and checks from `Quotas._check_request`."""
    app.before_request_funcs[None] = [
        f for f in app.before_request_funcs.get(None, []) if getattr(f, "__self__", None)
        is not limiter]
    for hooks in (app.after_request_funcs, app.teardown_request_funcs):
        hooks[None] = [f for f in hooks.get(None, [])  # type: ignore[index]
                       if limiter not in getattr(f, "args", ())
                       and getattr(f, "__self__", None) is not limiter]


def _tenant_or_nobody() -> str:
    """The limiter's key: the tenant. Authentication happens here, once per request; a request
    without a valid key is exempt here and answered 401 by its view."""
    from service.api.auth import current_principal

    try:
        return current_principal().tenant
    except Exception:  # noqa: BLE001 - the view raises it again and answers 401 or 503
        return ""


def _storage_uri(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url
