"""Query-string arguments of the read endpoints (job lists, stats, failures, queue history),
each checked the same way: a bad one answers 400 naming it and what it takes."""

from __future__ import annotations

import re
from datetime import datetime

from flask import request

from service.core.errors import InvalidInput
from service.core.states import JobStatus
from service.core.times import as_utc
from service.jobs import priorities, view

ID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")


def integer(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidInput(name, f"an integer from {low} to {high}")
    return value


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = request.args.get(name, default)
    if raw not in choices:
        raise InvalidInput(name, "one of " + ", ".join(choices))
    return raw


def moment(name: str) -> datetime | None:
    """An ISO 8601 time with a timezone (`2026-12-01T09:30:00Z`)."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidInput(name, "an ISO 8601 time with a timezone, e.g. 2026-12-01T09:30:00Z")
    return as_utc(value)


def model() -> str | None:
    raw = request.args.get("model")
    if raw is not None and not (0 < len(raw) <= 100 and "\x00" not in raw):
        raise InvalidInput("model", "a model's name, 1 to 100 characters without NUL")
    return raw


def priority() -> str | None:
    """The queue of the priority named, if any."""
    raw = request.args.get("priority")
    if raw is None:
        return None
    if raw not in priorities.NAMES:
        raise InvalidInput("priority", "one of " + ", ".join(priorities.NAMES))
    return priorities.NAMES[raw]


def id_prefix() -> str | None:
    raw = request.args.get("id")
    if raw is not None and not ID_PREFIX.fullmatch(raw):
        raise InvalidInput("id", "the start of a job id: 1 to 36 hex digits and dashes")
    return None if raw is None else raw.lower()


def status() -> JobStatus | None:
    raw = request.args.get("status")
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        raise InvalidInput("status", "one of " + ", ".join(s.value for s in JobStatus)) from None


def job_filter() -> view.JobFilter:
    """The job list's filters: status, model, priority, id, since and until (an empty range,
    `until` before `since`, lists nothing)."""
    return view.JobFilter(status=status(), model=model(), queue=priority(),
                          id_prefix=id_prefix(), since=moment("since"), until=moment("until"))


def cursor() -> view.Cursor | None:
    raw = request.args.get("cursor")
    return None if raw is None else view.Cursor.parse(raw)
