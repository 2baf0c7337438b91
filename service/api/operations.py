"""What an operator watches beyond a tenant's jobs: the workers (each process busy or idle,
its CPU and memory), the queues over time, and failing webhook events. Workers and queues are
shared by every tenant: they are listed with what they are and how busy, never with whose
jobs they hold (a pool process's task says how many jobs or chunks, not which)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from service.api import dashboard_schemas as D
from service.api import queryargs as args
from service.api import services
from service.api.auth import current_tenant
from service.api.openapi import documented
from service.core.times import iso
from service.ops import heartbeats, poolstate, queuehistory
from service.webhooks import failures

bp = Blueprint("operations", __name__)


@bp.get("/v1/workers")
@documented({200: D.Workers}, tags=["operations"])
def list_workers() -> Response:
    """List the workers, their processes and how fast they go

    Every worker process that sent a heartbeat in the last ten minutes: its host, process,
    Celery node, role (predicting, or delivering webhooks), queues and concurrency, its last
    heartbeat, the jobs and rows its pool finished (in total, and per second over the last
    minute), and each of its processes: CPU and memory, and for a pool process whether it is
    busy, with what, since when. A worker silent for `stale_after_seconds` is listed as
    stale. Workers are shared by every tenant: these are figures of the installation."""
    current_tenant()
    now = time.time()
    client = services().redis
    found = heartbeats.workers(client, now)
    return jsonify({"stale_after_seconds": heartbeats.WORKER_TTL,
                    "workers": [_worker(client, w, now) for w in found]})


def _worker(client: Any, state: heartbeats.WorkerState, now: float) -> dict[str, Any]:
    who = state.identity
    processes = [] if state.stale else poolstate.processes(client, who.name, state.usage)
    return {
        "name": who.name, "host": who.host, "pid": who.pid, "node": who.node,
        "role": heartbeats.role(who.queues),
        "queues": list(who.queues), "concurrency": who.concurrency,
        "started_at": iso(_utc(who.started_at)), "last_heartbeat": iso(_utc(state.last_heartbeat)),
        "heartbeat_age_seconds": round(max(0.0, now - state.last_heartbeat), 1),
        "stale": state.stale, "jobs_total": state.jobs_total, "rows_total": state.rows_total,
        "jobs_per_second": state.jobs_per_second, "rows_per_second": state.rows_per_second,
        "processes": [{**p, "since": None if p["since"] is None else iso(_utc(p["since"]))}
                      for p in processes],
    }


def _utc(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@bp.get("/v1/queues/history")
@documented({200: D.QueueHistory}, (400,), query=D.QueueHistoryQuery, tags=["operations"])
def queue_history() -> Response:
    """The predict queues' depth over time

    One sample every ten seconds (the reconciler takes it) over the last `minutes` (1-60,
    default 15), oldest first: for each predict queue, the jobs waiting, the bulk chunks not
    done yet, the rows of both, and how long the oldest has waited. Figures of the
    installation, shared by every tenant."""
    current_tenant()
    minutes = args.integer("minutes", 15, 1, 60)
    samples = queuehistory.read(services().redis, minutes)
    return jsonify({"every_seconds": queuehistory.SAMPLE_EVERY, "samples": [
        {"at": iso(_utc(s["at"])), "queues": s["queues"]} for s in samples]})


@bp.get("/v1/webhooks/failures")
@documented({200: D.WebhookFailures}, (400,), query=D.FailuresQuery, tags=["webhooks"])
def webhook_failures() -> Response:
    """List the tenant's failing webhook events

    Dead-lettered events, and pending ones whose last attempt failed, most recent first, up
    to `limit` (1-500, default 50), each with the error of its last attempt.
    `GET /v1/webhooks/failures/groups` counts them by endpoint and error instead."""
    tenant = current_tenant()
    limit = args.integer("limit", 50, 1, 500)
    with services().reads.connect() as conn:
        found = failures.recent(conn, tenant, limit)
    return jsonify({"events": [_event(event) for event in found]})


@bp.get("/v1/webhooks/failures/groups")
@documented({200: D.WebhookFailureGroups}, (400,), query=D.FailuresQuery, tags=["webhooks"])
def webhook_failure_groups() -> Response:
    """Count failing webhook events by endpoint and error

    The failing events of `GET /v1/webhooks/failures`, one row per endpoint, URL, status and
    last error: how many events, their attempts, the first and last created and the newest
    one's job; the most recent groups first, up to `limit` (1-500, default 50)."""
    tenant = current_tenant()
    limit = args.integer("limit", 50, 1, 500)
    with services().reads.connect() as conn:
        found = failures.grouped(conn, tenant, limit)
    return jsonify({"groups": [
        {**group, "attempts": int(group["attempts"] or 0), "first_at": iso(group["first_at"]),
         "last_at": iso(group["last_at"])} for group in found]})


def _event(event: dict[str, Any]) -> dict[str, Any]:
    pending = event["status"] == "pending"
    return {**event, "created_at": iso(event["created_at"]),
            "finished_at": iso(event["finished_at"]),
            "next_attempt_at": iso(event["next_attempt_at"]) if pending else None}
