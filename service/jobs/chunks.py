"""Bulk jobs in SQL: a job row plus its chunks (inputs in, results out, each zlib-compressed).

A chunk is claimed under a lease, predicted, and committed with a conditional UPDATE on its
claim, so a redelivered or reconciled message never writes a chunk twice; the job's
`rows_done` grows by each chunk's rows in the same transaction, and the job succeeds in the
statement that adds its last rows. A worker that dies loses only the chunk it held.

On PostgreSQL, a transaction that takes several chunks of a job takes them in seq order
(`_lock_in_order`), and the reconciler's sweep takes the rows of the jobs it fails before any
chunk: the orders the API's uploads and the workers' finishes take them in, so these
transactions queue one behind another and never deadlock (tests/jobs/test_chunk_locks.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from service.core.messaging import PREDICT_QUEUES
from service.core.states import JobStatus
from service.core.times import as_utc, utcnow
from service.jobs import idempotency, payloads
from service.jobs.idempotency import Claim
from service.jobs.lifecycle import JobRequest
from service.jobs.priorities import higher
from service.jobs.recovery import Cutoffs, exhausted_error
from service.store.db import job_chunks, jobs

PENDING, RUNNING, DONE = "pending", "running", "done"
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def chunk_id(job_id: str, seq: int) -> str:
    """How a chunk travels in a message: `job-id/seq`."""
    return f"{job_id}/{seq}"


def parse_chunk_id(text: str) -> tuple[str, int] | None:
    job_id, _, seq = text.rpartition("/")
    return (job_id, int(seq)) if job_id and seq.isdigit() else None


def add_chunk(conn: Connection, job_id: str, seq: int, rows: np.ndarray) -> None:
    """Store one uploaded chunk (before its job row exists: an upload that fails leaves
    chunks without a job, which `discard` or the reconciler removes)."""
    conn.execute(insert(job_chunks), {
        "job_id": job_id, "seq": seq, "n_rows": len(rows), "status": PENDING,
        "inputs": payloads.encode_rows(rows), "attempts": 0,
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
    _lock_in_order(conn, owned)  # then the DELETE, whatever its plan, waits for none of them
    return int(conn.execute(delete(job_chunks).where(owned)).rowcount)


def mark_published(conn: Connection, job_id: str, seqs: Sequence[int]) -> None:
    """Stamp these chunks of the job sent."""
    chosen = and_(job_chunks.c.job_id == job_id, job_chunks.c.seq.in_(list(seqs)))
    _lock_in_order(conn, chosen)
    _stamp(conn, chosen)


def _stamp(conn: Connection, chosen: ColumnElement[bool]) -> None:
    conn.execute(update(job_chunks).where(chosen).values(published_at=utcnow()))


def _lock_in_order(conn: Connection, chosen: ColumnElement[bool]) -> None:
    """Lock these chunks in (job, seq) order, as every transaction that takes several chunks
    does. A worker finishing chunk k holds it while it stamps the next unsent chunks (after
    k); an UPDATE or DELETE that locked rows as its plan read them (a small or fresh table's
    plan reads them in the heap's order, where a chunk updated since it was written comes
    last) could hold a later chunk while it waits for chunk k, and deadlock with the worker.
    SQLite runs one writer at a time and has no row locks."""
    if conn.dialect.name != "sqlite":
        conn.execute(select(job_chunks.c.seq).where(chosen)
                     .order_by(job_chunks.c.job_id, job_chunks.c.seq).with_for_update()).all()


@dataclass(frozen=True)
class ClaimedChunk:
    job_id: str
    seq: int
    model_id: int
    inputs: np.ndarray | None  # None: by reference, rows `start`-`stop` of `source`
    attempt: int
    tenant: str
    job_rows: int = 0  # rows of the whole job
    created_at: datetime | None = None  # the job's, for the submit-to-result time
    source: str | None = None
    start: int = 0
    stop: int = 0

    @property
    def rows(self) -> np.ndarray:
        assert self.inputs is not None, "a chunk by reference is read first"
        return self.inputs


def claim(conn: Connection, job_id: str, seq: int, lease_seconds: float) -> ClaimedChunk | None:
    """Take a pending chunk (or one whose lease expired) of a queued or running job; None if
    it is done, held by a live worker, or its job ended (cancelled, failed, expired)."""
    now = utcnow()
    job = conn.execute(select(jobs.c.status, jobs.c.model_id, jobs.c.tenant, jobs.c.n_chunks,
                              jobs.c.n_rows, jobs.c.created_at, jobs.c.input_ref)
                       .where(jobs.c.id == job_id)).first()
    if job is None or job.status not in ACTIVE or job.n_chunks is None:
        return None
    takeable = or_(job_chunks.c.status == PENDING,
                   and_(job_chunks.c.status == RUNNING, job_chunks.c.lease_until < now))
    row = conn.execute(
        update(job_chunks)
        .where(job_chunks.c.job_id == job_id, job_chunks.c.seq == seq, takeable)
        .values(status=RUNNING, lease_until=now + timedelta(seconds=lease_seconds),
                attempts=job_chunks.c.attempts + 1)
        .returning(job_chunks.c.inputs, job_chunks.c.n_rows, job_chunks.c.attempts,
                   job_chunks.c.start, job_chunks.c.stop)).first()
    if row is None:
        return None
    conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                 .values(status=JobStatus.RUNNING.value, started_at=now))
    if job.input_ref is not None:
        return ClaimedChunk(job_id, seq, job.model_id, None, row.attempts, job.tenant,
                            job.n_rows, job.created_at, job.input_ref, row.start, row.stop)
    matrix = payloads.decode_rows(row.inputs, row.n_rows)
    return ClaimedChunk(job_id, seq, job.model_id, matrix, row.attempts, job.tenant,
                        job.n_rows, job.created_at)


@dataclass(frozen=True)
class Finished:
    """A chunk committed: its job's status after (`succeeded` once this was its last chunk),
    queue, and the output file to write now (every chunk done, a job with an output)."""

    status: str
    queue: str
    output: str | None = None


def finish(conn: Connection, chunk: ClaimedChunk, result: dict[str, np.ndarray]
           ) -> Finished | None:
    """Commit a chunk's result if this claim still holds it, or return None if the chunk was
    not written. A job with an output file stays `running` after its last chunk: `complete`
    ends it once the file is written."""
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
    # chunk. Either way the UPDATE of the job's row serializes concurrent last chunks.
    last = or_(and_(~by_ref, jobs.c.uploading.is_(False), jobs.c.rows_done + n >= jobs.c.n_rows),
               and_(by_ref, jobs.c.chunks_done + 1 >= jobs.c.n_chunks))
    ends = and_(last, jobs.c.output_ref.is_(None))
    row = conn.execute(
        update(jobs)
        .where(jobs.c.id == chunk.job_id, jobs.c.status == JobStatus.RUNNING.value)
        .values(rows_done=jobs.c.rows_done + n, chunks_done=jobs.c.chunks_done + 1,
                n_rows=case((and_(last, by_ref), jobs.c.rows_done + n), else_=jobs.c.n_rows),
                status=case((ends, JobStatus.SUCCEEDED.value), else_=jobs.c.status),
                finished_at=case((ends, now), else_=jobs.c.finished_at))
        .returning(jobs.c.status, jobs.c.keep_inputs, jobs.c.queue, jobs.c.output_ref,
                   jobs.c.chunks_done, jobs.c.n_chunks)).first()
    if row is None:
        return None  # cancelled meanwhile: its chunk results stay unread
    if row.status == JobStatus.SUCCEEDED.value and not row.keep_inputs:
        drop_inputs(conn, chunk.job_id)
    pending_output = row.output_ref if row.status == JobStatus.RUNNING.value and \
        row.chunks_done >= row.n_chunks else None
    return Finished(str(row.status), str(row.queue), pending_output)


def awaiting_output(conn: Connection, job_id: str) -> str | None:
    """The output file of a running job whose chunks are all done (it is written, then the
    job succeeds), else None."""
    return conn.execute(select(jobs.c.output_ref).where(
        jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
        jobs.c.output_ref.is_not(None), jobs.c.chunks_done >= jobs.c.n_chunks)).scalar()


def complete(conn: Connection, job_id: str) -> bool:
    """A job whose output file is written succeeds (once: a second writer changes nothing)."""
    return bool(conn.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
                           jobs.c.chunks_done >= jobs.c.n_chunks)
        .values(status=JobStatus.SUCCEEDED.value, finished_at=utcnow())).rowcount)


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


def fail(conn: Connection, job_id: str, error: str) -> bool:
    """Fail a running or queued bulk job (a chunk the model cannot predict)."""
    return bool(conn.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
        .values(status=JobStatus.FAILED.value, error=error, finished_at=utcnow())).rowcount)


def keeps_inputs(conn: Connection, job_id: str) -> bool:
    return bool(conn.execute(select(jobs.c.keep_inputs).where(jobs.c.id == job_id)).scalar())


def drop_inputs(conn: Connection, job_id: str) -> None:
    conn.execute(update(job_chunks).where(job_chunks.c.job_id == job_id).values(inputs=None))


def sweep(conn: Connection, cutoffs: Cutoffs, window: int, max_attempts: int, limit: int
          ) -> tuple[list[tuple[str, str, int]], list[str]]:
    """For the reconciler: chunks to send again (job id, queue, seq), stamped published -
    lost messages, expired leases, and the next ones of each active job's window - and the
    bulk jobs failed because a chunk's worker died `max_attempts` times."""
    send, exhausted = _due(conn, cutoffs, window, max_attempts, limit)
    # The failed jobs' rows first, then chunks: an upload or a worker takes a job's row, then
    # its next chunks, so a sweep holding chunks while it waits for a job's row could deadlock.
    failed = [job_id for job_id in dict.fromkeys(exhausted)
              if fail(conn, job_id, exhausted_error(max_attempts))]
    send = [s for s in send if s[0] not in failed]
    by_job: dict[str, list[int]] = {}
    for job_id, _queue, seq in send:
        by_job.setdefault(job_id, []).append(seq)
    for job_id, seqs in by_job.items():
        mark_published(conn, job_id, seqs)
    return send, failed


def delete_abandoned(conn: Connection, older_than: datetime) -> int:
    """Delete the chunks of uploads that never became a job (the API died mid-upload, or the
    client vanished) and were stored before `older_than`; return how many."""
    return int(conn.execute(delete(job_chunks).where(
        job_chunks.c.published_at.is_(None), job_chunks.c.created_at < older_than,
        job_chunks.c.job_id.not_in(select(jobs.c.id)))).rowcount)


def _due(conn: Connection, cutoffs: Cutoffs, window: int, max_attempts: int, limit: int
         ) -> tuple[list[tuple[str, str, int]], list[str]]:
    now = utcnow()
    active = conn.execute(select(jobs.c.id, jobs.c.queue, jobs.c.output_ref, jobs.c.n_chunks)
                          .where(jobs.c.status.in_(ACTIVE), jobs.c.n_chunks.is_not(None))
                          .limit(limit)).all()
    send: list[tuple[str, str, int]] = []
    exhausted: list[str] = []
    for job_id, queue, output, n_chunks in active:
        rows = conn.execute(select(job_chunks).where(
            job_chunks.c.job_id == job_id, job_chunks.c.status != DONE)
            .order_by(job_chunks.c.seq)).mappings().all()
        in_flight = 0
        cutoff = cutoffs.for_queue(queue)
        if not rows and output is not None and _output_lost(conn, job_id, cutoff):
            send.append((job_id, queue, n_chunks - 1))  # its worker died writing the file
            continue
        for row in rows:
            expired = row["status"] == RUNNING and row["lease_until"] is not None and \
                as_utc(row["lease_until"]) < now
            if expired and row["attempts"] >= max_attempts:
                exhausted.append(job_id)
                break
            sent = row["published_at"] is not None
            lost = sent and row["status"] == PENDING and as_utc(row["published_at"]) < cutoff
            if expired or lost:
                send.append((job_id, queue, row["seq"]))
                in_flight += 1
            elif sent:
                in_flight += 1
            elif in_flight < window:
                send.append((job_id, queue, row["seq"]))
                in_flight += 1
    return send, exhausted


def _output_lost(conn: Connection, job_id: str, cutoff: datetime) -> bool:
    """Whether a job's chunks all finished before `cutoff` and its output is still not
    written: the worker that finished the last one died (the message of that chunk, sent
    again, writes it)."""
    last = conn.execute(select(func.max(job_chunks.c.finished_at))
                        .where(job_chunks.c.job_id == job_id)).scalar()
    return awaiting_output(conn, job_id) is not None and last is not None and \
        as_utc(last) < cutoff


def result_chunks(engine: Any, job_id: str, stored: str | None
                  ) -> Callable[[], Iterable[dict[str, Any]]]:
    """Any succeeded job's result as chunks, re-iterable: a small job's stored JSON is one
    chunk; a bulk job's are read from SQL one at a time, on a connection of their own."""
    if stored is not None:
        whole = json.loads(stored)
        return lambda: [whole]
    return lambda: stream_results(engine, job_id)


def stream_results(engine: Any, job_id: str) -> Iterator[dict[str, Any]]:
    """`results` on a connection of its own: for a response body written after the view.
    Autocommit: no transaction stays open while a slow client reads the body."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield from results(conn, job_id)


#: Chunk results read per statement when a result is streamed: a round trip per chunk held a
#: 10M-row download to ~50 MB/s; a page's results are in memory at once (~1.5 MB for 16
#: chunks of 10,000 rows with two class probabilities).
RESULT_PAGE = 16


def results(conn: Connection, job_id: str, page: int = RESULT_PAGE
            ) -> Iterator[dict[str, Any]]:
    """Each chunk's result in input order, `page` chunks read (and in memory) at a time."""
    after = -1
    query = select(job_chunks.c.seq, job_chunks.c.result).where(
        job_chunks.c.job_id == job_id, job_chunks.c.n_rows > 0,
        job_chunks.c.seq > bindparam("after")).order_by(job_chunks.c.seq).limit(page)
    while True:
        rows = conn.execute(query, {"after": after}).all()
        for seq, data in rows:
            after = seq
            yield payloads.decode_result(data)
        if len(rows) < page:
            return


def next_unsent(conn: Connection, job_id: str, count: int) -> list[int]:
    """Stamp the next `count` never-sent chunks of the job published and return their seqs:
    a bulk job keeps only a window of chunk messages in the broker at a time."""
    seqs = list(conn.execute(  # locked in seq order (see _lock_in_order) as they are read
        select(job_chunks.c.seq).where(job_chunks.c.job_id == job_id,
                                       job_chunks.c.status == PENDING,
                                       job_chunks.c.published_at.is_(None))
        .order_by(job_chunks.c.seq).limit(count).with_for_update()).scalars())
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
        "output_ref": ref.output if ref else None, "chunks_done": 0, "uploading": uploading})
    return True


def promote(conn: Connection, cutoff: datetime, limit: int) -> list[tuple[str, str, int]]:
    """The starvation rule for bulk jobs: an active bulk job whose sent chunks have waited
    since before `cutoff` moves up one priority level; its waiting chunks are returned
    (job id, new queue, seq), stamped sent, to be sent again on the new queue (a copy left
    on the old queue claims nothing)."""
    moved: list[tuple[str, str, int]] = []
    waiting = select(job_chunks.c.job_id).where(
        job_chunks.c.status == PENDING, job_chunks.c.published_at < cutoff)
    rows = conn.execute(select(jobs.c.id, jobs.c.queue).where(
        jobs.c.status.in_(ACTIVE), jobs.c.n_chunks.is_not(None),
        jobs.c.queue != PREDICT_QUEUES[0], jobs.c.id.in_(waiting)).limit(limit)).all()
    for job_id, queue in rows:
        new_queue = higher(queue) or queue
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(queue=new_queue))
        seqs = list(conn.execute(select(job_chunks.c.seq).where(
            job_chunks.c.job_id == job_id, job_chunks.c.status == PENDING,
            job_chunks.c.published_at.is_not(None))).scalars())
        mark_published(conn, job_id, seqs)
        moved.extend((job_id, new_queue, seq) for seq in seqs)
    return moved
