"""The operator dashboard at `/`, and the read-only endpoints it needs beyond the rest of the API:
job lists, a job's page, per-minute stats, failing webhook events and the workers. The page
itself is static (HTML, CSS and JS under static/); it calls the API with the viewer's key like
any other client, and sees that key's tenant only. Workers are shared: they are listed with
what they are and how fast they go, never with whose jobs they ran."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from service.api import dashboard_schemas as D
from service.api import services
from service.api.auth import current_principal, current_tenant
from service.api.openapi import documented
from service.core.errors import InvalidInput, JobNotFound
from service.core.states import JobStatus
from service.core.times import iso
from service.jobs import overview, priorities, view
from service.ops import heartbeats, stats
from service.webhooks import events as webhook_events
from service.webhooks import failures

bp = Blueprint("dashboard", __name__)
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
ID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")


@bp.get("/")
def page() -> Response:
    """The dashboard: static HTML that reads the JSON API with the viewer's key."""
    response = current_app.send_static_file("dashboard.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/v1/jobs")
@documented({200: D.JobList}, (400,), query=D.JobListQuery, tags=["jobs"])
def list_jobs() -> Response:
    """List the tenant's jobs, newest first

    Up to `limit` (1-500, default 50) of the tenant's most recent jobs, each exactly as
    `GET /v1/jobs/{id}` shows it; narrowed by `status`, `model` (a name), `priority` (a
    queue: interactive, normal or bulk) and `id` (the start of a job id, or a whole one)."""
    tenant = current_tenant()
    limit = _int_arg("limit", 50, 1, 500)
    where = view.JobFilter(status=_status_arg(), model=_model_arg(), queue=_priority_arg(),
                           id_prefix=_id_arg())
    with services().reads.connect() as conn:
        return jsonify({"jobs": view.recent(conn, tenant, limit, where)})


@bp.get("/v1/jobs/<job_id>/overview")
@documented({200: D.JobOverview}, (404,), tags=["jobs"])
def job_overview(job_id: str) -> Response:
    """Everything the dashboard's job page shows

    The job; when it was created, published to its queue, started and finished; a bulk job's
    chunks; the first rows of its result once it succeeded; its webhook events with every
    delivery attempt; and which actions this key may take on it (cancel and redeliver need the
    `submit` scope). Another tenant's job answers 404, like a missing one."""
    principal = current_principal()
    principal.require("read")
    tenant = principal.tenant
    if "\x00" in job_id:  # PostgreSQL cannot compare it; no id holds one
        raise JobNotFound(job_id)
    with services().reads.connect() as conn:
        found = overview.overview(conn, tenant, job_id)
        found["deliveries"] = webhook_events.deliveries(conn, tenant, job_id)
    submit = "submit" in principal.scopes
    status = found["job"]["status"]
    found["actions"] = {
        "cancel": submit and status in ACTIVE,
        "redeliver": submit and bool(found["deliveries"]) and status not in ACTIVE,
    }
    return jsonify(found)


@bp.get("/v1/stats")
@documented({200: D.Stats}, (400,), query=D.StatsQuery, tags=["jobs"])
def get_stats() -> Response:
    """Throughput and latency of the tenant's jobs

    Jobs finished, rows done and p50/p99 submit-to-finish latency per minute over the last
    `minutes` (1-60, default 15), oldest first; and jobs and rows per second over the last
    sixty seconds. A bulk job counts as one job when it ends, and its rows as its chunks
    commit."""
    tenant = current_tenant()
    minutes = _int_arg("minutes", 15, 1, 60)
    with services().reads.connect() as conn:
        found = stats.per_minute(conn, tenant, minutes)
        now = stats.rates(conn, tenant)
    return jsonify({
        "jobs_per_second": now.jobs_per_second, "rows_per_second": now.rows_per_second,
        "minutes": [
            {"minute": iso(m.start), "finished": m.finished, "succeeded": m.succeeded,
             "failed": m.failed, "rows": m.rows, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms}
            for m in found
        ]})


@bp.get("/v1/workers")
@documented({200: D.Workers}, tags=["health"])
def list_workers() -> Response:
    """List the workers and how fast they go

    Every worker process that sent a heartbeat in the last ten minutes: its host, process,
    Celery node, queues and concurrency, its last heartbeat, and the jobs and rows its pool
    finished (in total, and per second over its last beats). A worker silent for
    `stale_after_seconds` is listed as stale. Workers are shared by every tenant: these are
    figures of the installation, and name no job."""
    current_tenant()
    now = time.time()
    found = heartbeats.workers(services().redis, now)
    return jsonify({"stale_after_seconds": heartbeats.WORKER_TTL,
                    "workers": [_worker(w, now) for w in found]})


def _worker(state: heartbeats.WorkerState, now: float) -> dict[str, Any]:
    who = state.identity
    return {
        "name": who.name, "host": who.host, "pid": who.pid, "node": who.node,
        "queues": list(who.queues), "concurrency": who.concurrency,
        "started_at": iso(_utc(who.started_at)), "last_heartbeat": iso(_utc(state.last_heartbeat)),
        "heartbeat_age_seconds": round(max(0.0, now - state.last_heartbeat), 1),
        "stale": state.stale, "jobs_total": state.jobs_total, "rows_total": state.rows_total,
        "jobs_per_second": state.jobs_per_second, "rows_per_second": state.rows_per_second,
    }


def _utc(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@bp.get("/v1/webhooks/failures")
@documented({200: D.WebhookFailures}, (400,), query=D.FailuresQuery, tags=["webhooks"])
def webhook_failures() -> Response:
    """List the tenant's failing webhook events

    Dead-lettered events, and pending ones whose last attempt failed, most recent first, up
    to `limit` (1-500, default 50), each with the error of its last attempt."""
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


def _model_arg() -> str | None:
    raw = request.args.get("model")
    if raw is not None and not (0 < len(raw) <= 100 and "\x00" not in raw):
        raise InvalidInput("model", "a model's name, 1 to 100 characters without NUL")
    return raw


def _priority_arg() -> str | None:
    raw = request.args.get("priority")
    if raw is None:
        return None
    if raw not in priorities.NAMES:
        raise InvalidInput("priority", "one of " + ", ".join(priorities.NAMES))
    return priorities.NAMES[raw]


def _id_arg() -> str | None:
    raw = request.args.get("id")
    if raw is not None and not ID_PREFIX.fullmatch(raw):
        raise InvalidInput("id", "the start of a job id: 1 to 36 hex digits and dashes")
    return None if raw is None else raw.lower()


def _status_arg() -> JobStatus | None:
    raw = request.args.get("status")
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        raise InvalidInput("status", "one of " + ", ".join(s.value for s in JobStatus)) from None
