"""The job lifecycle: create, transition, fetch. Plain values in and out; no Flask, no Celery.

Every state change is one conditional UPDATE, so a redelivered message can never write a second
result or move a status backwards: delivery is at least once, the effect exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update

from service.db import jobs, models
from service.errors import JobNotFinished, JobNotFound


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
INTERACTIVE_QUEUE = "predict.interactive"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewJob:
    """A validated job, ready to insert. `inputs` is a float64 matrix in signature order."""

    tenant: str
    model_id: int
    inputs: np.ndarray
    queue: str = INTERACTIVE_QUEUE
    id: str = ""

    def with_id(self) -> NewJob:
        return NewJob(self.tenant, self.model_id, self.inputs, self.queue, str(uuid.uuid4()))


@dataclass(frozen=True)
class Claimed:
    """A job a worker has claimed: enough to predict it without another query."""

    id: str
    model_id: int
    inputs: np.ndarray
    attempts: int


def encode_inputs(matrix: np.ndarray) -> bytes:
    """Rows as little-endian float64 bytes: no parsing on the way in or out."""
    return np.ascontiguousarray(matrix, dtype="<f8").tobytes()


def decode_inputs(data: bytes, n_rows: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f8").reshape(n_rows, -1)


@dataclass(frozen=True)
class Outcome:
    """What a worker learned about one job: a result, or an error."""

    id: str
    result: dict[str, Any] | None = None
    error: str | None = None


def insert_jobs(conn: Connection, new_jobs: Sequence[NewJob]) -> list[str]:
    """INSERT queued rows (in the caller's transaction) and return their ids in order."""
    now = utcnow()
    rows = [
        {
            "id": job.id,
            "tenant": job.tenant,
            "model_id": job.model_id,
            "status": JobStatus.QUEUED.value,
            "queue": job.queue,
            "n_rows": len(job.inputs),
            "inputs": encode_inputs(job.inputs),
            "attempts": 0,
            "created_at": now,
            "published_at": now,  # the caller publishes right after the commit
        }
        for job in new_jobs
    ]
    # RETURNING makes SQLAlchemy send one multi-row INSERT ("insertmanyvalues") instead of one
    # statement per row.
    conn.execute(insert(jobs).returning(jobs.c.id), rows).all()
    return [job.id for job in new_jobs]


def claim(conn: Connection, job_ids: Iterable[str], lease_seconds: float) -> list[Claimed]:
    """Take queued jobs: mark them running under a lease and return them. Finished, running or
    missing ids are skipped, so a redelivered message claims nothing."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return []
    now = utcnow()
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(ids), jobs.c.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            started_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=jobs.c.attempts + 1,
        )
        .returning(jobs.c.id, jobs.c.model_id, jobs.c.inputs, jobs.c.n_rows, jobs.c.attempts)
    )
    return [
        Claimed(row.id, row.model_id, decode_inputs(row.inputs, row.n_rows), row.attempts)
        for row in conn.execute(stmt)
    ]


def claim_expired(conn: Connection, job_id: str, lease_seconds: float) -> Claimed | None:
    """Take one running job whose lease expired (its worker died), under a new lease."""
    now = utcnow()
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
               jobs.c.lease_until < now)
        .values(lease_until=now + timedelta(seconds=lease_seconds),
                attempts=jobs.c.attempts + 1)
        .returning(jobs.c.id, jobs.c.model_id, jobs.c.inputs, jobs.c.n_rows, jobs.c.attempts)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return Claimed(row.id, row.model_id, decode_inputs(row.inputs, row.n_rows), row.attempts)


def fail_exhausted(conn: Connection, max_attempts: int) -> list[str]:
    """Fail running jobs whose lease expired after `max_attempts` claims: each time, the worker
    running them died (poison input, out of memory), so they do not run again."""
    now = utcnow()
    error = exhausted_error(max_attempts)
    stmt = (
        update(jobs)
        .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now,
               jobs.c.attempts >= max_attempts)
        .values(status=JobStatus.FAILED.value, error=error, finished_at=now, lease_until=None)
        .returning(jobs.c.id)
    )
    return list(conn.execute(stmt).scalars())


def exhausted_error(max_attempts: int) -> str:
    return (f"gave up after {max_attempts} attempts: the worker running this job died each "
            "time (an input that crashes the model, or not enough memory)")


def due_for_republish(conn: Connection, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
    """Queued jobs whose last message is older than `cutoff`, and running jobs whose lease
    expired: stamp them published now and return (id, queue) to send again."""
    now = utcnow()
    lost = or_(jobs.c.status == JobStatus.QUEUED.value,
               and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now))
    due = (
        select(jobs.c.id)
        .where(lost, jobs.c.published_at < cutoff)
        .order_by(jobs.c.created_at)
        .limit(limit)
    )
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(due.scalar_subquery()), lost, jobs.c.published_at < cutoff)
        .values(published_at=now)
        .returning(jobs.c.id, jobs.c.queue)
    )
    return [(row.id, row.queue) for row in conn.execute(stmt)]


def finish(conn: Connection, outcomes: Sequence[Outcome]) -> int:
    """Write results and errors of running jobs in one statement each; return rows changed."""
    now = utcnow()
    done = [
        {"b_id": o.id, "b_result": json.dumps(o.result), "b_status": JobStatus.SUCCEEDED.value}
        for o in outcomes
        if o.error is None
    ]
    failed = [
        {"b_id": o.id, "b_error": o.error, "b_status": JobStatus.FAILED.value}
        for o in outcomes
        if o.error is not None
    ]
    changed = 0
    condition = and_(jobs.c.id == bindparam("b_id"), jobs.c.status == JobStatus.RUNNING.value)
    if done:
        stmt = update(jobs).where(condition).values(
            status=bindparam("b_status"), result=bindparam("b_result"), finished_at=now,
            lease_until=None,
        )
        changed += conn.execute(stmt, done).rowcount
    if failed:
        stmt = update(jobs).where(condition).values(
            status=bindparam("b_status"), error=bindparam("b_error"), finished_at=now,
            lease_until=None,
        )
        changed += conn.execute(stmt, failed).rowcount
    return changed


def get_job(conn: Connection, tenant: str, job_id: str) -> dict[str, Any]:
    """The job as its tenant sees it; another tenant's id is indistinguishable from unknown."""
    stmt = (
        select(
            jobs.c.id, jobs.c.status, jobs.c.n_rows, jobs.c.error, jobs.c.attempts,
            jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at, jobs.c.queue,
            models.c.name.label("model"), models.c.version,
        )
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.id == job_id, jobs.c.tenant == tenant)
    )
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise JobNotFound(job_id)
    return dict(row)


def get_result(conn: Connection, tenant: str, job_id: str) -> str:
    """The predictions with the model version and artifact sha256 that produced them, as JSON
    text: the stored result is passed through, not parsed and encoded again."""
    stmt = (
        select(
            jobs.c.status, jobs.c.result, jobs.c.error,
            models.c.name, models.c.version, models.c.sha256,
        )
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.id == job_id, jobs.c.tenant == tenant)
    )
    row = conn.execute(stmt).first()
    if row is None:
        raise JobNotFound(job_id)
    if row.status != JobStatus.SUCCEEDED.value:
        raise JobNotFinished(job_id, row.status, row.error)
    provenance = json.dumps({"model": row.name, "version": row.version, "sha256": row.sha256})
    return f"{row.result[:-1]}, {provenance[1:]}"  # both are JSON objects written by predq
