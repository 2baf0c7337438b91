"""What every way of submitting shares: body parsing, deadlines, cache, back-pressure."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from flask import request

from service import jobs, logs, realtime
from service.api import Services, services
from service.errors import InvalidInput, MalformedJSON, PredqError
from service.registry import ModelInfo
from service.webhooks import endpoints
from service.webhooks.safety import check_url

MAX_DEADLINE = timedelta(days=30)
log = logging.getLogger(__name__)


class UnsupportedMediaType(PredqError):
    status = 415
    code = "unsupported_media_type"


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or an error that says what is wrong with it."""
    max_depth = services().settings.max_json_depth
    mimetype = request.mimetype
    # curl -d sends application/x-www-form-urlencoded unless told otherwise; read it as JSON.
    if mimetype not in ("", "application/json", "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType(f"send Content-Type: application/json, not {mimetype}")
    raw = request.get_data(cache=False)
    depth = json_depth(raw, max_depth)
    if depth > max_depth:
        raise MalformedJSON(f"the JSON is nested {depth} levels deep; at most {max_depth}")
    try:
        body = json.loads(raw.decode("utf-8"))  # RFC 8259: JSON between systems is UTF-8
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"the body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise MalformedJSON(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise MalformedJSON("the JSON is nested too deeply") from exc
    if not isinstance(body, dict):
        raise MalformedJSON("the body must be a JSON object")
    return body


_URLS = frozenset({"url", "webhook_url"})
_BRACKETS = np.zeros(256, dtype=np.int8)
_BRACKETS[[ord("["), ord("{")]] = 1
_BRACKETS[[ord("]"), ord("}")]] = -1
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(raw: bytes, limit: int = 0) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted in C before the parser
    recurses (strings are blanked first: they may hold brackets). A text with at most `limit`
    brackets in all cannot nest deeper: its bracket count is returned without a scan."""
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets <= limit:
        return brackets
    if b'"' in raw:
        raw = _STRINGS.sub(b'""', raw)
    steps = _BRACKETS[np.frombuffer(raw, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Only the `allowed` fields, and no string longer than the settings' max_string_length
    among them (URLs have their own limit)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(unknown[0][:100], "unknown field")
    max_string = services().settings.max_string_length
    for name, value in body.items():
        if isinstance(value, str) and len(value) > max_string and name not in _URLS:
            raise InvalidInput(name, f"{len(value)} characters; at most {max_string}")


def version_of(body: dict[str, Any]) -> str | None:
    version = body.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
        raise InvalidInput("version", "must be a string")
    return None if version is None else str(version)


def parse_deadline(value: Any) -> datetime | None:
    """`deadline`: seconds from now (a number) or an ISO 8601 time with a timezone."""
    if value is None:
        return None
    now = jobs.utcnow()
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
    when = when.astimezone(UTC)
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


def check_webhook_url(svc: Services, tenant: str, value: Any) -> str | None:
    """A job's own webhook_url: a safe target, and a tenant secret to sign with."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise InvalidInput("webhook_url", "an http(s) URL of at most 2000 characters")
    check_url(value, svc.webhook_allow)
    with svc.reads.connect() as conn:
        if endpoints.job_secret(conn, tenant) is None:
            raise InvalidInput("webhook_url", "create the signing secret for job webhooks first: "
                                              "POST /v1/webhooks/job-secret")
    return value


def prepare(svc: Services, tenant: str, model: ModelInfo, rows: np.ndarray, queue: str,
            deadline: datetime | None, webhook_url: str | None = None,
            retention: int | None = None) -> jobs.NewJob:
    """The job to commit: served from the prediction cache if it can be (no worker, no queue
    slot, no rows quota), else admitted to its queue and counted against the tenant's rows
    per minute, or refused with 429 before anything is written."""
    cached = realtime.cached_result(svc.redis, model, rows)
    if cached is None:
        svc.gauge.admit(queue, tenant)
        svc.quotas.take_rows(tenant, len(rows))
    return jobs.NewJob(tenant=tenant, model_id=model.id, inputs=rows, queue=queue,
                       deadline=deadline, cached_result=cached, webhook_url=webhook_url,
                       model=model.name, request_id=logs.request_id.get(),
                       retention=retention).with_id()


def log_accepted(job: jobs.NewJob, model: ModelInfo) -> None:
    """One line per accepted job, after its commit (DEBUG: at a thousand jobs a second,
    INFO lines per job cost a tenth of the API's CPU)."""
    log.debug("job accepted", extra={
        "job_id": job.id, "tenant": job.tenant, "model": model.name, "version": model.version,
        "rows": len(job.inputs), "queue": job.queue, "from_cache": not job.needs_worker})
