"""Creating a bulk job: stream its rows into stored chunks, then commit the job row (with its
Idempotency-Key, if any) and pick the first chunks to send. Used by the API and schedules."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from sqlalchemy import Engine

from service import bulk, chunks
from service.config import Settings
from service.idempotency import Claim
from service.registry import ModelInfo


@dataclass(frozen=True)
class BulkJob:
    tenant: str
    model: ModelInfo
    fmt: str  # csv | ndjson | npy
    queue: str
    deadline: datetime | None = None
    webhook_url: str | None = None
    request_id: str | None = None
    keep_inputs: bool = False
    retention: int | None = None


def create(engine: Engine, settings: Settings, job: BulkJob, stream: IO[bytes],
           claim: Callable[[], Claim | None] = lambda: None,
           before_commit: Callable[[int], None] = lambda _rows: None,
           ) -> tuple[str, list[int]] | None:
    """Store the rows of `stream` as chunks and commit the job; return (job id, seqs of the
    chunks to send now), or None if the claimed Idempotency-Key belongs to another job. On
    any error (a bad row, a quota) nothing is left behind."""
    job_id = str(uuid.uuid4())
    try:
        n_rows = seq = 0
        for matrix in bulk.chunks(stream, job.fmt, job.model, settings.bulk_chunk_rows,
                                  settings.max_bulk_rows, settings.max_string_length):
            with engine.begin() as conn:
                chunks.add_chunk(conn, job_id, seq, matrix)
            seq += 1
            n_rows += len(matrix)
            time.sleep(0)  # parsing is CPU work: under gevent, let other requests in
        before_commit(n_rows)
        with engine.begin() as conn:
            if not chunks.insert_job(conn, job_id, job.tenant, job.model.id, job.queue, n_rows,
                                     seq, job.deadline, job.webhook_url, job.request_id,
                                     job.keep_inputs, claim(), job.retention):
                chunks.discard(conn, job_id)
                return None
            return job_id, chunks.next_unsent(conn, job_id, settings.bulk_window)
    except BaseException:
        with engine.begin() as conn:
            chunks.discard(conn, job_id)
        raise
