"""The operator dashboard at `/`, and the read-only endpoints its job views need beyond the rest
of the API: job lists, a job's page, per-minute stats (operations.py has the workers, the
queues over time and failing webhooks). The page itself is static (HTML, CSS and JS under
static/); it calls the API with the viewer's key like any other client, and sees that key's
tenant only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from service.api import dashboard_schemas as D
from service.api import queryargs as args
from service.api import services
from service.api.auth import current_principal, current_tenant
from service.api.openapi import documented
from service.core.errors import JobNotFound
from service.core.states import JobStatus
from service.core.times import iso
from service.jobs import overview, view
from service.ops import stats
from service.webhooks import events as webhook_events

bp = Blueprint("dashboard", __name__)
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@bp.get("/")
def page() -> Response:
    """The dashboard: static HTML that reads the JSON API with the viewer's key."""
    response = current_app.send_static_file("dashboard.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/v1/jobs")
@documented({200: D.JobList}, (400,), query=D.JobListQuery, tags=["jobs"])
def list_jobs() -> Response:
    """List the tenant's jobs, a page at a time

    Up to `limit` (1-500, default 50) of the tenant's jobs, newest first (`sort=oldest`: oldest
    first), each exactly as `GET /v1/jobs/{id}` shows it; narrowed by `status`, `model` (a
    name), `priority` (a queue: interactive, normal or bulk), `id` (the start of a job id, or
    a whole one) and the time it was created (`since`, `until`). When more jobs match, `next`
    is a cursor: send it back as `cursor`, with the same filters, for the next page."""
    tenant = current_tenant()
    limit = args.integer("limit", 50, 1, 500)
    where = args.job_filter()
    oldest_first = args.choice("sort", "newest", ("newest", "oldest")) == "oldest"
    after = args.cursor()
    with services().reads.connect() as conn:
        page = view.recent(conn, tenant, limit, where, after, oldest_first)
    return jsonify({"jobs": page.jobs, "next": page.next.token() if page.next else None})


@bp.get("/v1/jobs/<job_id>/overview")
@documented({200: D.JobOverview}, (404,), tags=["jobs"])
def job_overview(job_id: str) -> Response:
    """Everything the dashboard's job page shows

    The job; when it was created, published to its queue, started and finished; its input
    (how it came, its format, rows and columns); the workers that ran it; a bulk job's chunks;
    the first rows of its result once it succeeded; its webhook events with every delivery
    attempt; and which actions this key may take on it (cancel, retry and redeliver need the
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
        "retry": submit and status not in ACTIVE,
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
    minutes = args.integer("minutes", 15, 1, 60)
    with services().reads.connect() as conn:
        found = stats.per_minute(conn, tenant, minutes)
        now = stats.rates(conn, tenant)
    return jsonify({
        "jobs_per_second": now.jobs_per_second, "rows_per_second": now.rows_per_second,
        "waiting": {queue: {"jobs": jobs, "rows": rows}
                    for queue, (jobs, rows) in services().gauge.waiting(tenant).items()},
        "minutes": [
            {"minute": iso(m.start), "finished": m.finished, "succeeded": m.succeeded,
             "failed": m.failed, "rows": m.rows, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms}
            for m in found
        ]})


