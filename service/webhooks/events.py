"""The webhook outbox: an event is written in the same transaction as its job's final state, so a
crash between the two can neither lose nor double it; delivery reads the outbox.

Every attempt of one event sends the same id and the same body (a consumer deduplicates on the
id); only the `webhook-timestamp` header and the signature over it are new each time.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update

from service.core.errors import JobNotFound
from service.core.states import FINAL_STATES
from service.core.times import iso, utcnow
from service.store.db import jobs, models, webhook_attempts, webhook_endpoints, webhook_events
from service.webhooks import endpoints


@dataclass(frozen=True)
class Event:
    id: str
    tenant: str
    job_id: str
    endpoint_id: str
    url: str
    type: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt found out."""

    status_code: int | None
    latency_ms: float | None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked for
    final: bool = False  # no later attempt can do better (the endpoint is gone)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


# Run after every batch a worker finishes (and usually finding nothing): built once.
_WANTING_EVENTS = (
    select(jobs.c.id, jobs.c.tenant, jobs.c.status, jobs.c.webhook_url, jobs.c.result,
           jobs.c.error, jobs.c.n_rows, jobs.c.finished_at, models.c.name, models.c.version)
    .join(models, models.c.id == jobs.c.model_id)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)),
           jobs.c.status.in_([s.value for s in FINAL_STATES]),
           or_(jobs.c.webhook_url.is_not(None), jobs.c.tenant.in_(
               select(webhook_endpoints.c.tenant).where(webhook_endpoints.c.url.is_not(None),
                                                        webhook_endpoints.c.disabled_at.is_(None)))))
)


def record(conn: Connection, job_ids: Iterable[str], max_inline: int) -> list[str]:
    """Write the events of jobs that just reached a final state, in the caller's transaction;
    return their ids to publish after the commit. Jobs that already have their events (a
    redelivered message, a second reconciler) get none again."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return []
    rows = conn.execute(_WANTING_EVENTS, {"ids": ids}).all()
    if not rows:
        return []
    known = set(conn.execute(select(webhook_events.c.job_id, webhook_events.c.endpoint_id)
                             .where(webhook_events.c.job_id.in_([r.id for r in rows]))).all())
    by_tenant: dict[str, list[endpoints.Endpoint]] = {}
    for ep in endpoints.of_tenants(conn, {r.tenant for r in rows}):
        by_tenant.setdefault(ep.tenant, []).append(ep)
    now = utcnow()
    new = []
    for job in rows:
        kind = f"job.{job.status}"
        targets = [(ep.id, ep.url) for ep in by_tenant.get(job.tenant, []) if ep.wants(kind)]
        signer = next((ep for ep in by_tenant.get(job.tenant, []) if ep.url is None), None)
        if job.webhook_url and signer is not None:
            targets.append((signer.id, job.webhook_url))
        payload = _payload(job, kind, now, max_inline)
        for endpoint_id, url in targets:
            if (job.id, endpoint_id) in known:
                continue
            new.append({"id": f"msg_{uuid.uuid4().hex}", "tenant": job.tenant, "job_id": job.id,
                        "endpoint_id": endpoint_id, "url": url, "type": kind,
                        "payload": payload, "status": "pending", "attempts": 0,
                        "next_attempt_at": now, "published_at": now, "created_at": now})
    if new:
        conn.execute(insert(webhook_events), new)
    return [str(e["id"]) for e in new]


def _payload(job: Any, kind: str, now: datetime, max_inline: int) -> str:
    data: dict[str, Any] = {"id": job.id, "status": job.status, "model": job.name,
                            "version": job.version, "rows": job.n_rows}
    if job.error is not None:
        data["error"] = job.error
    if job.result is not None:
        if len(job.result) <= max_inline:
            data["result"] = json.loads(job.result)
        else:  # too big to push: the receiver fetches it
            data["result_url"] = f"/v1/jobs/{job.id}/result"
    return json.dumps({"type": kind, "timestamp": iso(now), "data": data},
                      separators=(",", ":"))


def claim(conn: Connection, event_id: str, lease_seconds: float) -> Event | None:
    """Take a due, pending event for one attempt under a lease; None if it is delivered, dead,
    not yet due, or another deliverer holds it."""
    now = utcnow()
    stmt = (
        update(webhook_events)
        .where(webhook_events.c.id == event_id, webhook_events.c.status == "pending",
               webhook_events.c.next_attempt_at <= now,
               or_(webhook_events.c.lease_until.is_(None), webhook_events.c.lease_until < now))
        .values(attempts=webhook_events.c.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds))
        .returning(webhook_events.c.id, webhook_events.c.tenant, webhook_events.c.job_id,
                   webhook_events.c.endpoint_id, webhook_events.c.url, webhook_events.c.type,
                   webhook_events.c.payload, webhook_events.c.attempts)
    )
    row = conn.execute(stmt).first()
    return None if row is None else Event(**row._mapping)


def complete(conn: Connection, event: Event, attempt: Attempt,
             schedule: Sequence[float]) -> float | None:
    """Log the attempt and move the event on: delivered, dead (410, or the schedule is spent:
    dead-lettered), or due again after the next delay of the schedule (with jitter, never
    before a Retry-After). Returns that delay, or None when the event is final."""
    now = utcnow()
    conn.execute(insert(webhook_attempts), {
        "event_id": event.id, "attempted_at": now, "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms, "error": attempt.error})
    mine = and_(webhook_events.c.id == event.id, webhook_events.c.status == "pending")
    if attempt.delivered:
        conn.execute(update(webhook_events).where(mine).values(
            status="delivered", finished_at=now, lease_until=None, last_error=None))
        return None
    error = attempt.error or f"answered {attempt.status_code}"
    if attempt.gone:
        endpoints.disable(conn, event.endpoint_id, "the receiver answered 410 Gone")
    if attempt.gone or attempt.final or event.attempts > len(schedule):
        conn.execute(update(webhook_events).where(mine).values(
            status="dead", finished_at=now, lease_until=None, last_error=error))
        return None
    delay = schedule[event.attempts - 1] * random.uniform(1.0, 1.2)  # noqa: S311 - jitter
    if attempt.retry_after is not None:
        delay = max(delay, min(attempt.retry_after, 86_400.0))
    conn.execute(update(webhook_events).where(mine).values(
        next_attempt_at=now + timedelta(seconds=delay), lease_until=None, published_at=None,
        last_error=error))
    return delay


def tenants_of(conn: Connection, event_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(event id, tenant) of the pending events among `event_ids`, in the order given."""
    rows = dict(conn.execute(select(webhook_events.c.id, webhook_events.c.tenant).where(
        webhook_events.c.id.in_(list(event_ids)), webhook_events.c.status == "pending")).all())
    return [(i, rows[i]) for i in dict.fromkeys(event_ids) if i in rows]


def mark_published(conn: Connection, event_id: str) -> None:
    conn.execute(update(webhook_events).where(webhook_events.c.id == event_id)
                 .values(published_at=utcnow()))


def due(conn: Connection, republish_after: float, limit: int) -> list[str]:
    """Pending events whose attempt is due and whose message is not on its way (never sent for
    this attempt, or sent longer than `republish_after` ago and lost): stamp and return them."""
    now = utcnow()
    lost = now - timedelta(seconds=republish_after)
    waiting = and_(
        webhook_events.c.status == "pending", webhook_events.c.next_attempt_at <= now,
        or_(webhook_events.c.published_at.is_(None), webhook_events.c.published_at < lost),
        or_(webhook_events.c.lease_until.is_(None), webhook_events.c.lease_until < now))
    pick = select(webhook_events.c.id).where(waiting).limit(limit)
    stmt = (update(webhook_events).where(webhook_events.c.id.in_(pick.scalar_subquery()), waiting)
            .values(published_at=now).returning(webhook_events.c.id))
    return list(conn.execute(stmt).scalars())


def redeliver(conn: Connection, tenant: str, job_id: str) -> list[str]:
    """Send every event of the job again, with the same ids, on a fresh schedule."""
    _check_job(conn, tenant, job_id)
    now = utcnow()
    stmt = (update(webhook_events)
            .where(webhook_events.c.job_id == job_id, webhook_events.c.tenant == tenant)
            .values(status="pending", attempts=0, next_attempt_at=now, published_at=now,
                    lease_until=None, finished_at=None)
            .returning(webhook_events.c.id))
    return list(conn.execute(stmt).scalars())


def deliveries(conn: Connection, tenant: str, job_id: str) -> list[dict[str, Any]]:
    """Every event of the job with every attempt: time, status code, latency, error."""
    _check_job(conn, tenant, job_id)
    events = conn.execute(select(webhook_events).where(
        webhook_events.c.job_id == job_id, webhook_events.c.tenant == tenant)
        .order_by(webhook_events.c.created_at)).all()
    attempts = conn.execute(select(webhook_attempts).where(
        webhook_attempts.c.event_id.in_([e.id for e in events]))
        .order_by(webhook_attempts.c.id)).all()
    out = []
    for e in events:
        out.append({
            "id": e.id, "type": e.type, "url": e.url, "status": e.status,
            "next_attempt_at": iso(e.next_attempt_at) if e.status == "pending" else None,
            "attempts": [{"at": iso(a.attempted_at), "status_code": a.status_code,
                          "latency_ms": a.latency_ms, "error": a.error}
                         for a in attempts if a.event_id == e.id],
        })
    return out


def _check_job(conn: Connection, tenant: str, job_id: str) -> None:
    found = conn.execute(select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.tenant == tenant))
    if found.first() is None:
        raise JobNotFound(job_id)

