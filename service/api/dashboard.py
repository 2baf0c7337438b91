"""The operator dashboard at `/`, and the read-only endpoints it needs beyond the rest of the API:
recent jobs, per-minute stats, failing webhook events. The page itself is static (HTML, CSS and
JS under static/); it calls the API with the viewer's key like any other client."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from service.api import dashboard_schemas as D
from service.api import services
from service.api.auth import current_tenant
from service.api.openapi import documented
from service.core.errors import InvalidInput
from service.core.states import JobStatus
from service.core.times import iso
from service.jobs import view
from service.ops import stats
from service.webhooks import failures

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def page() -> Response:
    """The dashboard: static HTML that reads the JSON API with the viewer's key."""
    response = current_app.send_static_file("dashboard.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/v1/jobs")
@documented({200: D.JobList}, (400,), query=D.JobListQuery, tags=["jobs"])
def list_jobs() -> Response:
    """List recent jobs

    The tenant's most recent jobs, newest first, each as `GET /v1/jobs/{job_id}` shows it:
    `limit` (1-500, default 50), and only those in `status` if given."""
    tenant = current_tenant()
    limit = _int_arg("limit", 50, 1, 500)
    status = _status_arg()
    with services().reads.connect() as conn:
        return jsonify({"jobs": view.recent(conn, tenant, limit, status)})


@bp.get("/v1/stats")
@documented({200: D.Stats}, (400,), query=D.StatsQuery, tags=["jobs"])
def get_stats() -> Response:
    """Jobs finished per minute

    Jobs finished (succeeded, failed) and p50/p99 submit-to-finish latency per minute over
    the last `minutes` (1-60, default 15), oldest first."""
    tenant = current_tenant()
    minutes = _int_arg("minutes", 15, 1, 60)
    with services().reads.connect() as conn:
        found = stats.per_minute(conn, tenant, minutes)
    return jsonify({"minutes": [
        {"minute": iso(m.start), "finished": m.finished, "succeeded": m.succeeded,
         "failed": m.failed, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms}
        for m in found
    ]})


@bp.get("/v1/webhooks/failures")
@documented({200: D.WebhookFailures}, (400,), query=D.FailuresQuery, tags=["webhooks"])
def webhook_failures() -> Response:
    """List failing webhook events

    The tenant's dead-lettered events, and pending ones whose last attempt failed, most
    recent first: where each was going and the last error."""
    tenant = current_tenant()
    limit = _int_arg("limit", 50, 1, 500)
    with services().reads.connect() as conn:
        found = failures.recent(conn, tenant, limit)
    return jsonify({"events": [_event(event) for event in found]})


def _event(event: dict[str, Any]) -> dict[str, Any]:
    pending = event["status"] == "pending"
    return {**event, "created_at": iso(event["created_at"]),
            "finished_at": iso(event["finished_at"]),
            "next_attempt_at": iso(event["next_attempt_at"]) if pending else None}


def _int_arg(name: str, default: int, low: int, high: int) -> int:
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


def _status_arg() -> JobStatus | None:
    raw = request.args.get("status")
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        raise InvalidInput("status", "one of " + ", ".join(s.value for s in JobStatus)) from None
