"""Time as predq writes it: aware UTC datetimes, ISO 8601 with a Z in every answer."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; predq writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as every API answer and webhook body writes times."""
    return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")
