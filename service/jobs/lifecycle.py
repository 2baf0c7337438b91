"""A single job's life before its end, and after: create, claim, renew its lease, fetch its
result. Plain values in and out; no Flask, no Celery. Its end (an outcome, a cancel, an expiry)
is `service/jobs/ending.py`'s.

Every state change is one conditional UPDATE, so a redelivered message can never write a second
result or move a status backwards: delivery is at least once, the effect exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, or_, select, update

from service.core.errors import JobNotFinished, JobNotFound
from service.core.messaging import NORMAL
from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs import idempotency
from service.jobs.idempotency import Claim
from service.jobs.requests import JobRequest
from service.jobs.typedstore import decode_batch, encode_batch
from service.models.modelinput import Batch, as_matrix
from service.models.schema import InputSchema
from service.store.db import insert_many, jobs, models


@dataclass(frozen=True)
class NewJob:
    """A validated job, ready to insert. `inputs` is its model's batch: a float64 matrix in
    schema order, or an Arrow record batch of a typed model's (`schema`; None: numbers). A job
    with a `cached_result` (JSON text) is recorded as already succeeded, from cache."""

    tenant: str
    model_id: int
    inputs: Batch
    queue: str = NORMAL
    id: str = ""
    deadline: datetime | None = None
    cached_result: str | None = None
    webhook_url: str | None = None
    model: str = ""  # the model's name, for metrics labels
    request_id: str | None = None  # the HTTP request that submitted it
    idempotency: Claim | None = None  # the Idempotency-Key it takes, if any
    retention: int | None = None  # seconds kept once final; None: the tenant's or default
    schema: InputSchema | None = None  # the model's input schema; None: numbers
    retry_of: str | None = None  # the job this one retries
    shadow_model_id: int | None = None  # the rollout's shadow version it also runs on

    def with_id(self) -> NewJob:
        return self if self.id else replace(self, id=str(uuid.uuid4()))

    @classmethod
    def of(cls, req: JobRequest, rows: Batch, cached_result: str | None = None,
           claim: Claim | None = None) -> NewJob:
        """The job a request makes of `rows`, with the request's job id."""
        return cls(tenant=req.tenant, model_id=req.model.id, inputs=rows, queue=req.queue,
                   id=req.job_id, deadline=req.deadline, cached_result=cached_result,
                   webhook_url=req.webhook_url, model=req.model.name,
                   request_id=req.request_id, idempotency=claim, retention=req.retention,
                   schema=req.model.schema, retry_of=req.retry_of,
                   shadow_model_id=None if req.shadow is None or cached_result is not None
                   else req.shadow.id)

    @property
    def needs_worker(self) -> bool:
        return self.cached_result is None

    @property
    def n_rows(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class Claimed:
    """A job a worker has claimed: enough to predict it without another query. Its inputs
    are kept as stored until the model's schema says how to read them (`rows`)."""

    id: str
    model_id: int
    stored: bytes
    n_rows: int
    attempts: int
    queue: str = NORMAL
    tenant: str = ""
    created_at: datetime | None = None  # for the submit-to-result time
    request_id: str | None = None  # for the logs
    shadow_model_id: int | None = None  # the rollout's shadow version it also runs on

    def rows(self, schema: InputSchema) -> Batch:
        return decode_inputs(self.stored, self.n_rows, schema)


def encode_inputs(rows: Batch, schema: InputSchema | None = None) -> bytes:
    """A job's rows as stored: little-endian float64 bytes for a model of numbers (no parsing
    on the way in or out, and the form every job had before types), an Arrow IPC stream for
    a typed one. The model's schema, not the bytes, tells which (a version never changes)."""
    if schema is None or schema.numeric_only:
        return np.ascontiguousarray(as_matrix(rows), dtype="<f8").tobytes()
    return encode_batch(rows, schema)


def decode_inputs(data: bytes, n_rows: int, schema: InputSchema | None = None) -> Batch:
    if schema is None or schema.numeric_only:
        return np.frombuffer(data, dtype="<f8").reshape(n_rows, -1)
    return decode_batch(data, schema, n_rows)


@dataclass(frozen=True)
class Outcome:
    """What a worker learned about one job under its claim (`attempt`): a result, or an
    error. It is written only while that claim still holds the job."""

    id: str
    attempt: int
    result: dict[str, Any] | None = None
    error: str | None = None


class KeyTaken(Exception):
    """The job's Idempotency-Key already belongs to another job: it was not inserted."""


def insert_jobs(conn: Connection, new_jobs: Sequence[NewJob]) -> list[str]:
    """INSERT queued rows (in the caller's transaction) and return the ids inserted, in order.
    A job whose Idempotency-Key another job holds is left out (see `idempotency.take`)."""
    now = utcnow()
    keyed = [job for job in new_jobs if job.idempotency is not None]
    if keyed:
        won = idempotency.take(conn, [
            {"tenant": job.tenant, "key": job.idempotency.key,  # type: ignore[union-attr]
             "fingerprint": job.idempotency.fingerprint,  # type: ignore[union-attr]
             "job_id": job.id, "created_at": now} for job in keyed])
        new_jobs = [job for job in new_jobs if job.idempotency is None or job.id in won]
        if not new_jobs:
            return []
    rows = [
        {
            "id": job.id,
            "tenant": job.tenant,
            "model_id": job.model_id,
            "status": JobStatus.QUEUED.value if job.needs_worker else JobStatus.SUCCEEDED.value,
            "queue": job.queue,
            "n_rows": len(job.inputs),
            "inputs": encode_inputs(job.inputs, job.schema),
            "result": job.cached_result,
            "from_cache": not job.needs_worker,
            "attempts": 0,
            "created_at": now,
            "started_at": None if job.needs_worker else now,
            "finished_at": None if job.needs_worker else now,
            "published_at": now,  # the caller publishes right after the commit
            "deadline": job.deadline,
            "webhook_url": job.webhook_url,
            "request_id": job.request_id,
        }
        for job in new_jobs
    ]
    if any(job.retention is not None or job.retry_of is not None
           or job.shadow_model_id is not None for job in new_jobs):
        for row, job in zip(rows, new_jobs, strict=True):  # rare: keep the common INSERT short
            row["retention"], row["retry_of"] = job.retention, job.retry_of
            row["shadow_model_id"] = job.shadow_model_id
    insert_many(conn, jobs, rows)
    return [job.id for job in new_jobs]


# The statements a worker runs for every batch are built once, with bind parameters: building
# one costs more client CPU than running it (measured on PostgreSQL: the claim of one job
# 336 µs built per call, 93 µs prebuilt), and at a few jobs per batch that was half the
# worker's CPU per job.
_CLAIM = (
    update(jobs)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)),
           jobs.c.status == JobStatus.QUEUED.value,
           jobs.c.n_chunks.is_(None),  # a bulk job runs chunk by chunk (chunkclaims.py)
           or_(jobs.c.deadline.is_(None), jobs.c.deadline > bindparam("now")))
    .values(status=JobStatus.RUNNING.value, started_at=bindparam("now"),
            lease_until=bindparam("lease"), attempts=jobs.c.attempts + 1,
            worker=bindparam("worker"))
    .returning(jobs.c.id, jobs.c.model_id, jobs.c.inputs, jobs.c.n_rows, jobs.c.attempts,
               jobs.c.queue, jobs.c.tenant, jobs.c.created_at, jobs.c.request_id,
               jobs.c.shadow_model_id)
)


def claim(conn: Connection, job_ids: Iterable[str], lease_seconds: float,
          worker: str | None = None) -> list[Claimed]:
    """Take queued jobs: mark them running under a lease, by `worker` (its name, for the job
    page), and return them. Finished, running, cancelled, expired or missing ids are skipped,
    so a redelivered message claims nothing; a job past its deadline is not taken (see
    `expire`)."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return []
    now = utcnow()
    params = {"ids": ids, "now": now, "lease": now + timedelta(seconds=lease_seconds),
              "worker": worker}
    return [
        Claimed(row.id, row.model_id, row.inputs, row.n_rows, row.attempts,
                row.queue, row.tenant, row.created_at, row.request_id, row.shadow_model_id)
        for row in conn.execute(_CLAIM, params)
    ]


def renew_leases(conn: Connection, held: Sequence[tuple[str, int]], lease_seconds: float
                 ) -> int:
    """Extend the leases of the running jobs still held by these claims (id, attempt): a
    live worker keeps its jobs however long its batch runs; a frozen or dead one stops
    renewing, and its jobs are taken over once the lease ends. Returns the leases renewed."""
    if not held:
        return 0
    stmt = (update(jobs)
            .where(jobs.c.id == bindparam("b_id"), jobs.c.attempts == bindparam("b_attempt"),
                   jobs.c.status == JobStatus.RUNNING.value)
            .values(lease_until=utcnow() + timedelta(seconds=lease_seconds)))
    return int(conn.execute(stmt, [{"b_id": i, "b_attempt": a} for i, a in held]).rowcount)


def result_source(conn: Connection, tenant: str, job_id: str) -> dict[str, Any]:
    """What rendering a succeeded job's result needs: its rows, chunks (bulk) or stored
    result (small), the model's labels, and the provenance fields."""
    stmt = (
        select(jobs.c.status, jobs.c.error, jobs.c.n_rows, jobs.c.n_chunks,
               jobs.c.result, models.c.name, models.c.version, models.c.sha256,
               models.c.labels)
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.id == job_id, jobs.c.tenant == tenant)
    )
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise JobNotFound(job_id)
    if row["status"] != JobStatus.SUCCEEDED.value:
        raise JobNotFinished(job_id, row["status"], row["error"])
    return dict(row)


def output_source(conn: Connection, job_id: str) -> dict[str, Any]:
    """`result_source` for a job whose chunks are all done but which has not succeeded yet:
    its result file is written before it does."""
    return dict(conn.execute(
        select(jobs.c.n_rows, jobs.c.n_chunks, jobs.c.result, models.c.name, models.c.version,
               models.c.sha256, models.c.labels)
        .join(models, models.c.id == jobs.c.model_id).where(jobs.c.id == job_id)
    ).mappings().one())


def get_result(conn: Connection, tenant: str, job_id: str) -> str | None:
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
    if row.result is None:
        return None  # a bulk job: its result is in its chunks (chunkresults.results)
    provenance = json.dumps({"model": row.name, "version": row.version, "sha256": row.sha256})
    return f"{row.result[:-1]}, {provenance[1:]}"  # both are JSON objects written by predq
