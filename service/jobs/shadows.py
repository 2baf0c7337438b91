"""Shadow runs of a rollout: a job that ended also runs on its shadow version, and what that
version answered is stored beside the job (`shadow_results`), never in it. The job's result,
version, status and webhooks are its own; a shadow is not a job (no queue slot, no quota, no
starvation promotion). A shadow whose message was lost (a broker restart) is sent again by
the reconciler while its job ended less than `RESEND_WITHIN` ago; later, it is given up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.core.errors import JobNotFound
from service.core.times import iso, utcnow
from service.jobs.lifecycle import decode_inputs
from service.models.modelinput import Batch
from service.models.schema import InputSchema
from service.store.db import job_chunks, jobs, models, shadow_chunk_results, shadow_results

#: How long after its job ended a lost shadow is still sent again.
RESEND_WITHIN = timedelta(hours=1)
_ENDED = ("succeeded", "failed")
_FINAL = ("succeeded", "failed", "cancelled", "expired")


@dataclass(frozen=True)
class Pending:
    """A job whose shadow has not answered yet: its stored rows and the shadow version."""

    id: str
    shadow_model_id: int
    stored: bytes
    n_rows: int

    def rows(self, schema: InputSchema) -> Batch:
        return decode_inputs(self.stored, self.n_rows, schema)


@dataclass(frozen=True)
class Answer:
    """What a shadow version answered for one job (a result, or an error) and how long its
    batch took."""

    job_id: str
    model_id: int
    seconds: float
    result: dict[str, Any] | None = None
    error: str | None = None


def pending(conn: Connection, job_ids: Sequence[str]) -> list[Pending]:
    """The jobs among `job_ids` that have a shadow with no answer yet (a redelivered message
    finds none) and still hold their inputs."""
    if not job_ids:
        return []
    answered = exists().where(shadow_results.c.job_id == jobs.c.id)
    rows = conn.execute(
        select(jobs.c.id, jobs.c.shadow_model_id, jobs.c.inputs, jobs.c.n_rows)
        .where(jobs.c.id.in_(list(job_ids)), jobs.c.shadow_model_id.is_not(None),
               jobs.c.inputs.is_not(None), jobs.c.n_chunks.is_(None), ~answered))
    return [Pending(r.id, r.shadow_model_id, r.inputs, r.n_rows) for r in rows]


@dataclass(frozen=True)
class PendingChunk:
    """A chunk of a shadowed bulk job with no shadow answer yet: its stored rows, or (by
    reference) where they are in the job's input file."""

    job_id: str
    seq: int
    shadow_model_id: int
    stored: bytes | None
    n_rows: int
    source: str | None = None
    start: int = 0
    stop: int = 0


@dataclass(frozen=True)
class ChunkAnswer:
    job_id: str
    seq: int
    model_id: int
    seconds: float
    result: bytes | None = None  # payloads.encode_result
    error: str | None = None


def pending_chunks(conn: Connection, chunks: Sequence[tuple[str, int]]) -> list[PendingChunk]:
    """The done chunks among `chunks` (job id, seq) of shadowed bulk jobs with no shadow
    answer yet, whose rows are still there (stored, or in the file by reference)."""
    if not chunks:
        return []
    answered = exists().where(shadow_chunk_results.c.job_id == job_chunks.c.job_id,
                              shadow_chunk_results.c.seq == job_chunks.c.seq)
    named = or_(*(and_(job_chunks.c.job_id == j, job_chunks.c.seq == q) for j, q in chunks))
    rows = conn.execute(
        select(job_chunks.c.job_id, job_chunks.c.seq, job_chunks.c.inputs, job_chunks.c.n_rows,
               job_chunks.c.start, job_chunks.c.stop, jobs.c.shadow_model_id,
               jobs.c.input_ref)
        .join(jobs, jobs.c.id == job_chunks.c.job_id)
        .where(named, job_chunks.c.status == "done", jobs.c.shadow_model_id.is_not(None),
               or_(job_chunks.c.inputs.is_not(None), jobs.c.input_ref.is_not(None)),
               ~answered))
    return [PendingChunk(r.job_id, r.seq, r.shadow_model_id, r.inputs, r.n_rows, r.input_ref,
                         r.start or 0, r.stop or 0) for r in rows]


def record_chunks(conn: Connection, answers: Sequence[ChunkAnswer]) -> int:
    """Store the chunks' answers (one already stored is kept), then drop the answered chunks'
    inputs once their job has ended and does not keep them (`Ending.succeed_bulk` left them
    for this). Returns how many answers went in."""
    if not answers:
        return 0
    now = utcnow()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stored = int(conn.execute(dialect.insert(shadow_chunk_results).values([
        {"job_id": a.job_id, "seq": a.seq, "model_id": a.model_id, "seconds": a.seconds,
         "result": a.result, "error": a.error, "created_at": now} for a in answers])
        .on_conflict_do_nothing(index_elements=["job_id", "seq"])).rowcount or 0)
    ended = select(jobs.c.id).where(jobs.c.status.in_(_FINAL), jobs.c.keep_inputs.is_(False))
    conn.execute(update(job_chunks).where(
        or_(*(and_(job_chunks.c.job_id == a.job_id, job_chunks.c.seq == a.seq)
              for a in answers)),
        job_chunks.c.job_id.in_(ended)).values(inputs=None))
    return stored


def lost(conn: Connection, before: datetime, limit: int) -> list[str]:
    """Jobs that ended before `before` (and within `RESEND_WITHIN` of it) with a shadow still
    unanswered: their message was lost, or waits in a worker's prefetch (a second one is
    harmless: `pending` finds nothing the second time)."""
    answered = exists().where(shadow_results.c.job_id == jobs.c.id)
    return list(conn.execute(
        select(jobs.c.id)
        .where(jobs.c.shadow_model_id.is_not(None), jobs.c.finished_at < before,
               jobs.c.finished_at >= before - RESEND_WITHIN, jobs.c.status.in_(_ENDED),
               jobs.c.inputs.is_not(None), jobs.c.n_chunks.is_(None), ~answered)
        .order_by(jobs.c.finished_at).limit(limit)).scalars())


def record(conn: Connection, answers: Sequence[Answer]) -> int:
    """Store the answers; one already stored (a redelivery) is kept. Returns how many went in."""
    if not answers:
        return 0
    now = utcnow()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (dialect.insert(shadow_results).values([
        {"job_id": a.job_id, "model_id": a.model_id, "seconds": a.seconds, "created_at": now,
         "result": None if a.result is None else json.dumps(a.result), "error": a.error}
        for a in answers]).on_conflict_do_nothing(index_elements=["job_id"]))
    return int(conn.execute(stmt).rowcount or 0)


def of_job(conn: Connection, job_id: str) -> dict[str, Any]:
    """A job's version and its shadow's answer, for an operator (any tenant's job)."""
    row = conn.execute(
        select(jobs.c.id, jobs.c.tenant, jobs.c.status, jobs.c.shadow_model_id,
               jobs.c.n_chunks, models.c.name, models.c.version)
        .join(models, models.c.id == jobs.c.model_id).where(jobs.c.id == job_id)).first()
    if row is None:
        raise JobNotFound(job_id)
    out: dict[str, Any] = {"job_id": row.id, "tenant": row.tenant, "model": row.name,
                           "version": row.version, "status": row.status, "shadow": None}
    if row.shadow_model_id is None:
        return out
    version = conn.execute(select(models.c.version)
                           .where(models.c.id == row.shadow_model_id)).scalar()
    if row.n_chunks is not None:
        out["shadow"] = _of_chunks(conn, job_id, version, row.n_chunks)
        return out
    answer = conn.execute(select(shadow_results)
                          .where(shadow_results.c.job_id == job_id)).first()
    out["shadow"] = {
        "version": version, "status": "pending" if answer is None else
        "failed" if answer.error is not None else "succeeded",
        "result": None if answer is None or answer.result is None else json.loads(answer.result),
        "error": None if answer is None else answer.error,
        "seconds": None if answer is None else answer.seconds,
        "created_at": None if answer is None else iso(answer.created_at)}
    return out


def _of_chunks(conn: Connection, job_id: str, version: str | None, n_chunks: int
               ) -> dict[str, Any]:
    """A bulk job's shadow, summed over its chunks (their rows stay in the store: the
    comparison reads them)."""
    found = conn.execute(
        select(func.count(), func.count(shadow_chunk_results.c.error),
               func.sum(shadow_chunk_results.c.seconds),
               func.max(shadow_chunk_results.c.created_at), func.min(shadow_chunk_results.c.error))
        .where(shadow_chunk_results.c.job_id == job_id)).one()
    answered, failed, seconds, last, error = found
    status = "failed" if failed else "succeeded" if answered >= n_chunks else "pending"
    return {"version": version, "status": status, "result": None, "error": error,
            "seconds": seconds, "created_at": iso(last) if last is not None else None,
            "chunks": n_chunks, "chunks_answered": int(answered)}
