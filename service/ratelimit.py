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

from flask import Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItemPerMinute
from sqlalchemy import Connection, Engine, delete, insert, select

from service.db import tenant_limits
from service.errors import InvalidInput, PredqError

log = logging.getLogger(__name__)


class RateLimited(PredqError):
    """Over the tenant's quota: retry after `retry_after` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retry_after": self.retry_after}


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
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(tenant)
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
    """The app's limiter: a per-tenant request rate on every /v1 call, and `take_rows` for
    the rows each accepted job will cost a worker."""

    def __init__(self, app: Flask, redis_url: str, limits: TenantLimits) -> None:
        self.limits = limits
        self.limiter = Limiter(
            key_func=_tenant_or_nobody, app=app, storage_uri=_storage_uri(redis_url),
            storage_options={"socket_timeout": 2, "socket_connect_timeout": 2},
            strategy="sliding-window-counter", key_prefix="predq:limits",
            application_limits=[self._request_limit],
            application_limits_exempt_when=self._exempt, default_limits=[],
            headers_enabled=True, retry_after="delta-seconds",
            swallow_errors=True, in_memory_fallback_enabled=True,
        )

        @app.errorhandler(RateLimitExceeded)
        def too_many(exc: RateLimitExceeded) -> Response:
            from service.api.errors import error_response

            tenant = g.get("principal").tenant if g.get("principal") else "this tenant"
            response = error_response(429, {
                "code": "rate_limited",
                "message": f"{tenant} is over its rate limit of {exc.description}; see "
                           "Retry-After"})
            for name, value in exc.get_headers():
                if name.lower() == "retry-after" or name.lower().startswith("x-ratelimit"):
                    response.headers[name] = value
            return response

    def _request_limit(self) -> str:
        tenant = _tenant_or_nobody()  # flask-limiter asks before it asks _exempt
        rps = self.limits.of(tenant).requests_per_second if tenant else 0
        return f"{max(1, math.floor(rps))} per 1 second"

    def _exempt(self) -> bool:
        """Only authenticated /v1 calls of tenants with a request limit are counted."""
        if not request.path.startswith("/v1/") or not _tenant_or_nobody():
            return True
        return self.limits.of(g.principal.tenant).requests_per_second <= 0

    def take_rows(self, tenant: str, rows: int) -> None:
        """Count `rows` against the tenant's rows per minute, or raise RateLimited (429, or
        400 for a job that could never fit)."""
        per_minute = self.limits.of(tenant).rows_per_minute
        if per_minute <= 0:
            return
        if rows > per_minute:
            raise InvalidInput("inputs", f"{rows} rows; this tenant may send at most "
                                         f"{per_minute} rows per minute: split the job")
        item = RateLimitItemPerMinute(per_minute)
        strategy = self.limiter.limiter
        try:
            if strategy.hit(item, "rows", tenant, cost=rows):
                return
            reset, _remaining = strategy.get_window_stats(item, "rows", tenant)
        except Exception as exc:  # noqa: BLE001 - a quota store outage must not stop submits
            log.warning("rows quota unavailable, not counted: %s", exc)
            return
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(f"{tenant} is over its quota of {per_minute} rows per minute",
                          retry_after)


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
