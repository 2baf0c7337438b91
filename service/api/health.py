"""Liveness and readiness, with the queues' depth and age and the live worker count."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from service.api import schemas as S
from service.api import services
from service.api.openapi import documented
from service.ops import heartbeats

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented({200: (S.Health, "Alive")}, public=True, tags=["health"])
def healthz() -> Response:
    """Liveness

    Answers 200 while the API process runs; says nothing about its dependencies. For a
    liveness probe (restart the process if it fails). Needs no key."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@documented({200: (S.Ready, "Ready: both stores answer; with queue figures and live workers"),
             503: (S.Ready, "Not ready: `checks` names the store that does not answer")},
            public=True, tags=["health"])
def readyz() -> tuple[Response, int]:
    """Readiness

    200 when both the result store (SQL) and Redis answer, with each predict queue's depth,
    oldest job's age and drain rate, and the number of live workers; else 503 naming the
    store that does not answer. For a readiness probe or a load balancer. Needs no key."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        svc.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    if ready:  # both stores answer, so the figures can be read
        body["queues"] = {
            name: {"depth": q.depth, "chunks": q.chunks, "rows": q.rows,
                   "oldest_age_seconds": q.oldest_age_seconds,
                   "drain_per_second": q.drain_per_second}
            for name, q in svc.gauge.stats().items()
        }
        body["workers"] = heartbeats.live_workers(svc.redis)
    return jsonify(body), 200 if ready else 503
