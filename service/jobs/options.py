"""The options of a job, checked the same way for every entry point: deadline, retention and
its own webhook URL. Each error names the field."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from service.core.errors import InvalidInput
from service.core.times import utcnow
from service.webhooks import endpoints
from service.webhooks.safety import AllowList, check_url

MAX_DEADLINE = timedelta(days=30)


def parse_deadline(value: Any) -> datetime | None:
    """`deadline`: seconds from now (a number) or an ISO 8601 time with a timezone."""
    if value is None:
        return None
    now = utcnow()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise InvalidInput("deadline", "seconds from now must be a positive number")
        if value > MAX_DEADLINE.total_seconds():
            raise InvalidInput("deadline", "at most 30 days from now")
        return now + timedelta(seconds=value)
    if not isinstance(value, str):
        raise InvalidInput("deadline", "seconds from now, or an ISO 8601 time with a timezone")
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("deadline", f"not an ISO 8601 time: {value[:40]!r}") from exc
    if when.tzinfo is None:
        raise InvalidInput("deadline", "needs a timezone, e.g. 2026-11-29T18:00:00Z")
    try:
        when = when.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise InvalidInput("deadline", "at most 30 days from now") from None
    if when <= now:
        raise InvalidInput("deadline", "is in the past")
    if when - now > MAX_DEADLINE:
        raise InvalidInput("deadline", "at most 30 days from now")
    return when


def parse_retention(value: Any) -> int | None:
    """`retention`: seconds a finished job is kept (default: the tenant's, else 30 days)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidInput("retention", "seconds, a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("retention", "seconds, a number")
    if not 60 <= value <= 10 * 365 * 86400:
        raise InvalidInput("retention", "between 60 seconds and 10 years")
    return int(value)


def check_webhook_url(engine: Engine, allow: AllowList, tenant: str, value: Any) -> str | None:
    """A job's own webhook_url: a safe target, and a tenant secret to sign with."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise InvalidInput("webhook_url", "an http(s) URL of at most 2000 characters")
    check_url(value, allow)
    with engine.connect() as conn:
        if endpoints.job_secret(conn, tenant) is None:
            raise InvalidInput("webhook_url", "create the signing secret for job webhooks first: "
                                              "POST /v1/webhooks/job-secret")
    return value
