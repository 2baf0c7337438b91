"""A bulk job's rows in SQL: its job row and its chunks (stored rows in, results out), and
which chunks have been sent. Only a few chunks of all bulk jobs are in the broker at a time
(`dispatch` chooses them; `stamp_next` marks them sent); the rest wait here.

On PostgreSQL, a transaction that takes several chunks of a job takes them in seq order
(`lock_in_order`), and the reconciler's sweep takes the rows of the jobs it fails before any
chunk: the orders the API's uploads and the workers' finishes take them in, so these
transactions queue one behind another and never deadlock (tests/jobs/test_chunk_locks.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, select, update

from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs import idempotency, payloads
from service.jobs.idempotency import Claim
from service.jobs.requests import JobRequest
from service.jobs.typedstore import encode_batch
from service.models.modelinput import Batch
from service.models.schema import InputSchema
from service.store.db import job_chunks, jobs

PENDING, RUNNING, DONE = "pending", "running", "done"
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def add_chunk(conn: Connection, job_id: str, seq: int, rows: Batch,
              schema: InputSchema | None = None) -> None:
    """Store one uploaded chunk (before its job row exists: an upload that fails leaves
    chunks without a job, which `discard` or the reconciler removes)."""
    conn.execute(insert(job_chunks), {
        "job_id": job_id, "seq": seq, "n_rows": len(rows), "status": PENDING,
        "inputs": encode_batch(rows, schema) if schema is not None else
        payloads.encode_rows(rows), "attempts": 0,
        "created_at": utcnow()})


@dataclass(frozen=True)
class Reference:
    """A bulk job by reference, planned: the input file (as `service.bulk.refs.Source` JSON),
    where its result goes (relative to the data root; None: stored only), its rows, and each
    chunk's (rows, start, stop) in that file."""

    source: str
    output: str | None
    n_rows: int
    ranges: list[tuple[int, int, int]]


def add_ref_chunks(conn: Connection, job_id: str, ranges: Sequence[tuple[int, int, int]]
                   ) -> None:
    """A job by reference's chunks: ranges of its input file, read by the worker."""
    now = utcnow()
    conn.execute(insert(job_chunks), [
        {"job_id": job_id, "seq": seq, "n_rows": rows, "status": PENDING, "inputs": None,
         "attempts": 0, "created_at": now, "start": start, "stop": stop}
        for seq, (rows, start, stop) in enumerate(ranges)])


def discard(conn: Connection, job_ids: Sequence[str]) -> int:
    """Delete these jobs' chunks; return how many."""
    owned = job_chunks.c.job_id.in_(list(job_ids))
    lock_in_order(conn, owned)  # then the DELETE, whatever its plan, waits for none of them
    return int(conn.execute(delete(job_chunks).where(owned)).rowcount)


def mark_published(conn: Connection, job_id: str, seqs: Sequence[int]) -> None:
    """Stamp these chunks of the job sent."""
    chosen = and_(job_chunks.c.job_id == job_id, job_chunks.c.seq.in_(list(seqs)))
    lock_in_order(conn, chosen)
    _stamp(conn, chosen)


def _stamp(conn: Connection, chosen: ColumnElement[bool]) -> None:
    conn.execute(update(job_chunks).where(chosen).values(published_at=utcnow()))


def lock_in_order(conn: Connection, chosen: ColumnElement[bool]) -> None:
    """Lock these chunks in (job, seq) order, as every transaction that takes several chunks
    does. A worker finishing chunk k holds it while it stamps the next unsent chunks (after
    k); an UPDATE or DELETE that locked rows as its plan read them (a small or fresh table's
    plan reads them in the heap's order, where a chunk updated since it was written comes
    last) could hold a later chunk while it waits for chunk k, and deadlock with the worker.
    SQLite runs one writer at a time and has no row locks."""
    if conn.dialect.name != "sqlite":
        conn.execute(select(job_chunks.c.seq).where(chosen)
                     .order_by(job_chunks.c.job_id, job_chunks.c.seq).with_for_update()).all()


def stamp_next(conn: Connection, job_id: str, count: int) -> list[int]:
    """Stamp the next `count` never-sent chunks of the job published and return their seqs
    (`dispatch` chooses which jobs' chunks go out). Rows another transaction holds (an upload
    storing them, a worker) are skipped, not waited for: the next dispatch takes them."""
    seqs = list(conn.execute(  # locked in seq order (see lock_in_order) as they are read
        select(job_chunks.c.seq).where(job_chunks.c.job_id == job_id,
                                       job_chunks.c.status == PENDING,
                                       job_chunks.c.published_at.is_(None))
        .order_by(job_chunks.c.seq).limit(count).with_for_update(skip_locked=True)).scalars())
    if seqs:
        _stamp(conn, and_(job_chunks.c.job_id == job_id, job_chunks.c.seq.in_(seqs)))
    return seqs


def queue_of(conn: Connection, job_id: str) -> str:
    return str(conn.execute(select(jobs.c.queue).where(jobs.c.id == job_id)).scalar_one())


def insert_job(conn: Connection, job_id: str, req: JobRequest, n_rows: int, n_chunks: int,
               claim: Claim | None = None, ref: Reference | None = None,
               uploading: bool = False) -> bool:
    """The bulk job's row (`uploading`: with an upload's first chunk, see `uploads`); False
    if its Idempotency-Key belongs to another job (then nothing was inserted)."""
    now = utcnow()
    if claim is not None and job_id not in idempotency.take(conn, [{
            "tenant": req.tenant, "key": claim.key, "fingerprint": claim.fingerprint,
            "job_id": job_id, "created_at": now}]):
        return False
    conn.execute(insert(jobs), {
        "id": job_id, "tenant": req.tenant, "model_id": req.model.id,
        "status": JobStatus.QUEUED.value, "queue": req.queue, "n_rows": n_rows, "inputs": None,
        "attempts": 0, "created_at": now, "published_at": now, "deadline": req.deadline,
        "webhook_url": req.webhook_url, "request_id": req.request_id, "n_chunks": n_chunks,
        "rows_done": 0, "keep_inputs": req.keep_inputs, "from_cache": False,
        "retention": req.retention, "input_ref": ref.source if ref else None,
        "output_ref": ref.output if ref else None, "chunks_done": 0, "uploading": uploading,
        "input_format": req.input_format, "retry_of": req.retry_of,
        "shadow_model_id": None if req.shadow is None else req.shadow.id})
    return True


def delete_abandoned(conn: Connection, older_than: datetime) -> int:
    """Delete the chunks of uploads that never became a job (the API died mid-upload, or the
    client vanished) and were stored before `older_than`; return how many."""
    return int(conn.execute(delete(job_chunks).where(
        job_chunks.c.published_at.is_(None), job_chunks.c.created_at < older_than,
        job_chunks.c.job_id.not_in(select(jobs.c.id)))).rowcount)


def keeps_inputs(conn: Connection, job_id: str) -> bool:
    return bool(conn.execute(select(jobs.c.keep_inputs).where(jobs.c.id == job_id)).scalar())


def drop_inputs(conn: Connection, job_id: str) -> None:
    conn.execute(update(job_chunks).where(job_chunks.c.job_id == job_id).values(inputs=None))
