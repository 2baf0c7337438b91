"""The reconciler's side of bulk jobs: chunk messages lost or held by a dead worker are sent
again, and a job whose chunk killed its worker too often fails. (Which chunks go out next is
`dispatch`'s: the reconciler runs it after the sweep.)"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from service.core.messaging import CHUNK_LANES, CHUNK_QUEUE, CHUNK_TASK, chunk_id
from service.core.times import as_utc, utcnow
from service.jobs.chunkclaims import awaiting_output
from service.jobs.chunkstore import ACTIVE, DONE, PENDING, RUNNING, mark_published
from service.jobs.ending import Ending, exhausted_error
from service.jobs.recovery import Cutoffs
from service.store.db import job_chunks, jobs


def sweep(ending: Ending, cutoffs: Cutoffs, max_attempts: int, limit: int
          ) -> tuple[int, list[str]]:
    """For the reconciler: send chunks again - lost messages, expired leases - stamped
    published (the messages go out after the commit), and fail the bulk jobs whose chunk's
    worker died `max_attempts` times. Returns how many chunks it sends and the jobs it
    failed."""
    conn = ending.conn
    send, exhausted = _due(conn, cutoffs, max_attempts, limit)
    # The failed jobs' rows first, then chunks: an upload or a worker takes a job's row, then
    # its next chunks, so a sweep holding chunks while it waits for a job's row could deadlock.
    failed = [job_id for job_id in dict.fromkeys(exhausted)
              if ending.fail_bulk(job_id, exhausted_error(max_attempts))]
    send = [s for s in send if s[0] not in failed]
    _send(ending, send)
    return len(send), failed


def _send(ending: Ending, chunks: list[tuple[str, str, int]]) -> None:
    """Stamp chunks (job id, queue, seq) sent, locking each job's in seq order, and send them
    after the commit, one message per chunk."""
    by_job: dict[str, list[int]] = {}
    for job_id, _queue, seq in chunks:
        by_job.setdefault(job_id, []).append(seq)
    for job_id, seqs in by_job.items():
        mark_published(ending.conn, job_id, seqs)
    for job_id, _queue, seq in chunks:
        ending.send(CHUNK_TASK, CHUNK_QUEUE, [chunk_id(job_id, seq)])


def _due(conn: Connection, cutoffs: Cutoffs, max_attempts: int, limit: int
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
        cutoff = cutoffs.for_queue(*CHUNK_LANES)  # either lane may hold it
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
    return send, exhausted


def _output_lost(conn: Connection, job_id: str, cutoff: datetime) -> bool:
    """Whether a job's chunks all finished before `cutoff` and its output is still not
    written: the worker that finished the last one died (the message of that chunk, sent
    again, writes it)."""
    last = conn.execute(select(func.max(job_chunks.c.finished_at))
                        .where(job_chunks.c.job_id == job_id)).scalar()
    return awaiting_output(conn, job_id) is not None and last is not None and \
        as_utc(last) < cutoff
