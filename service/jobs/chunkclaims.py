"""A bulk job's chunks on a worker: claimed under a lease, renewed while predicted, committed
with a conditional UPDATE on the claim, so a redelivered or reconciled message never writes a
chunk twice. The job's `rows_done` grows by each chunk's rows in the same transaction; whether
that was its last chunk is the caller's to act on (`Progress.last`): the job's end belongs to
`service/jobs/ending.py`. A worker that dies loses only the chunk it held.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Connection, and_, case, func, or_, select, update

from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs import payloads
from service.jobs.chunkstore import ACTIVE, DONE, PENDING, RUNNING
from service.jobs.typedstore import decode_batch
from service.models.modelinput import Batch
from service.models.schema import InputSchema
from service.store.db import job_chunks, jobs


@dataclass(frozen=True)
class ClaimedChunk:
    """A chunk a worker holds: its rows as stored (`stored`), or by reference rows
    `start`-`stop` of `source`; `inputs` once read in its model's schema (`with_rows`)."""

    job_id: str
    seq: int
    model_id: int
    stored: bytes | None  # None: by reference
    n_rows: int
    attempt: int
    tenant: str
    job_rows: int = 0  # rows of the whole job
    created_at: datetime | None = None  # the job's, for the submit-to-result time
    source: str | None = None
    start: int = 0
    stop: int = 0
    inputs: Batch | None = None
    shadow_model_id: int | None = None  # the rollout's shadow version its chunks run on too

    @property
    def rows(self) -> Batch:
        assert self.inputs is not None, "a chunk's rows are read first (`with_rows`)"
        return self.inputs

    def with_rows(self, rows: Batch) -> ClaimedChunk:
        return replace(self, inputs=rows)

    def decode(self, schema: InputSchema) -> Batch:
        """The stored rows in the model's schema (a chunk tells its own form)."""
        assert self.stored is not None, "a chunk by reference is read from its file"
        return decode_batch(self.stored, schema, self.n_rows)


def claim(conn: Connection, job_id: str, seq: int, lease_seconds: float,
          worker: str | None = None) -> ClaimedChunk | None:
    """Take a pending chunk (or one whose lease expired) of a queued or running job, by
    `worker` (its name, for the job page); None if it is done, held by a live worker, or its
    job ended (cancelled, failed, expired)."""
    now = utcnow()
    job = conn.execute(select(jobs.c.status, jobs.c.model_id, jobs.c.tenant, jobs.c.n_chunks,
                              jobs.c.n_rows, jobs.c.created_at, jobs.c.input_ref,
                              jobs.c.shadow_model_id)
                       .where(jobs.c.id == job_id)).first()
    if job is None or job.status not in ACTIVE or job.n_chunks is None:
        return None
    takeable = or_(job_chunks.c.status == PENDING,
                   and_(job_chunks.c.status == RUNNING, job_chunks.c.lease_until < now))
    row = conn.execute(
        update(job_chunks)
        .where(job_chunks.c.job_id == job_id, job_chunks.c.seq == seq, takeable)
        .values(status=RUNNING, lease_until=now + timedelta(seconds=lease_seconds),
                attempts=job_chunks.c.attempts + 1, worker=worker)
        .returning(job_chunks.c.inputs, job_chunks.c.n_rows, job_chunks.c.attempts,
                   job_chunks.c.start, job_chunks.c.stop)).first()
    if row is None:
        return None
    conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                 .values(status=JobStatus.RUNNING.value, started_at=now))
    if job.input_ref is not None:
        return ClaimedChunk(job_id, seq, job.model_id, None, row.n_rows, row.attempts,
                            job.tenant, job.n_rows, job.created_at, job.input_ref, row.start,
                            row.stop, shadow_model_id=job.shadow_model_id)
    return ClaimedChunk(job_id, seq, job.model_id, row.inputs, row.n_rows, row.attempts,
                        job.tenant, job.n_rows, job.created_at,
                        shadow_model_id=job.shadow_model_id)


@dataclass(frozen=True)
class Progress:
    """A chunk committed: its job's queue, whether that was the job's last chunk, and the
    output file to write now if the job has one (it succeeds once the file is written)."""

    queue: str
    last: bool
    output: str | None = None

    @property
    def ends_job(self) -> bool:
        """The job succeeds with this chunk (it has no output file to write first)."""
        return self.last and self.output is None


def finish(conn: Connection, chunk: ClaimedChunk, result: dict[str, np.ndarray]
           ) -> Progress | None:
    """Commit a chunk's result if this claim still holds it, or return None if the chunk was
    not written (the claim was taken over, or the job ended meanwhile)."""
    now = utcnow()
    n = len(chunk.rows)
    written = conn.execute(
        update(job_chunks)
        .where(job_chunks.c.job_id == chunk.job_id, job_chunks.c.seq == chunk.seq,
               job_chunks.c.status == RUNNING, job_chunks.c.attempts == chunk.attempt)
        .values(status=DONE, finished_at=now, lease_until=None, n_rows=n,
                result=payloads.encode_result(result))).rowcount
    if not written:
        return None
    by_ref = jobs.c.input_ref.is_not(None)
    # Uploaded rows are counted at submit; a file's chunks (a CSV's rows are estimated) by
    # chunk. Either way the UPDATE of the job's row serializes concurrent last chunks: the
    # one that sees the totals reached is the last, and ends the job in this transaction.
    last = or_(and_(~by_ref, jobs.c.uploading.is_(False), jobs.c.rows_done + n >= jobs.c.n_rows),
               and_(by_ref, jobs.c.chunks_done + 1 >= jobs.c.n_chunks))
    row = conn.execute(
        update(jobs)
        .where(jobs.c.id == chunk.job_id, jobs.c.status == JobStatus.RUNNING.value)
        .values(rows_done=jobs.c.rows_done + n, chunks_done=jobs.c.chunks_done + 1,
                n_rows=case((and_(last, by_ref), jobs.c.rows_done + n), else_=jobs.c.n_rows))
        .returning(jobs.c.queue, jobs.c.output_ref, jobs.c.input_ref, jobs.c.uploading,
                   jobs.c.rows_done, jobs.c.n_rows, jobs.c.chunks_done, jobs.c.n_chunks)
    ).first()
    if row is None:
        return None  # cancelled meanwhile: its chunk results stay unread
    done = row.chunks_done >= row.n_chunks if row.input_ref is not None else \
        not row.uploading and row.rows_done >= row.n_rows
    return Progress(str(row.queue), done, row.output_ref if done else None)


def awaiting_output(conn: Connection, job_id: str) -> str | None:
    """The output file of a running job whose chunks are all done (it is written, then the
    job succeeds), else None."""
    return conn.execute(select(jobs.c.output_ref).where(
        jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
        jobs.c.output_ref.is_not(None), jobs.c.chunks_done >= jobs.c.n_chunks)).scalar()


def holds(conn: Connection, chunk: ClaimedChunk) -> bool:
    """Whether this claim still holds the chunk (its lease was not taken over)."""
    return conn.execute(select(job_chunks.c.seq).where(
        job_chunks.c.job_id == chunk.job_id, job_chunks.c.seq == chunk.seq,
        job_chunks.c.status == RUNNING, job_chunks.c.attempts == chunk.attempt)).first() \
        is not None


def renew_lease(conn: Connection, chunk: ClaimedChunk, lease_seconds: float) -> int:
    """Extend the lease of a chunk still held by this claim (see lifecycle.renew_leases)."""
    return int(conn.execute(
        update(job_chunks)
        .where(job_chunks.c.job_id == chunk.job_id, job_chunks.c.seq == chunk.seq,
               job_chunks.c.status == RUNNING, job_chunks.c.attempts == chunk.attempt)
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))).rowcount)


def rows_before(conn: Connection, chunk: ClaimedChunk) -> int:
    """How many of its job's rows the chunks before this one hold (exact for uploads and
    Parquet; for a CSV read by reference, an estimate until they are read)."""
    return int(conn.execute(select(func.coalesce(func.sum(job_chunks.c.n_rows), 0)).where(
        job_chunks.c.job_id == chunk.job_id, job_chunks.c.seq < chunk.seq)).scalar_one())
