"""A refused upload's chunks are discarded while a worker may be finishing one of them: the two
transactions must queue one behind the other, never deadlock (PostgreSQL's row locks)."""

import threading
import time
import uuid

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text, update

from service.core.times import utcnow
from service.jobs import chunks, uploads
from service.store.db import job_chunks


def test_discarding_an_upload_waits_for_a_worker_finishing_a_chunk(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite runs one writer at a time")
    job_id = str(uuid.uuid4())
    this_job = job_chunks.c.job_id == job_id
    with engine.begin() as conn:
        for seq in range(4):
            chunks.add_chunk(conn, job_id, seq, np.ones((10, 4)))
    with engine.begin() as conn:  # chunk 0 claimed: its row version moves after the others
        conn.execute(update(job_chunks).where(this_job, job_chunks.c.seq == 0)
                     .values(status="running", published_at=utcnow()))
    worker = engine.connect()
    tx = worker.begin()
    # A worker finishing chunk 0 (its row locked) ...
    worker.execute(update(job_chunks).where(this_job, job_chunks.c.seq == 0)
                   .values(status="done"))
    errors: list[BaseException] = []

    def discard() -> None:
        try:
            with engine.begin() as conn:
                # The plan a small or fresh table gets (seen in CI): rows in the heap's order,
                # where chunk 0's new version comes last.
                conn.execute(text("SET LOCAL enable_indexscan = off"))
                conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                uploads.discard(conn, job_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    api = threading.Thread(target=discard)
    api.start()
    try:
        time.sleep(0.5)
        assert api.is_alive()  # the discard waits for the worker's transaction
        # ... then stamps the next chunks sent, in the same transaction.
        worker.execute(update(job_chunks).where(this_job, job_chunks.c.seq.in_([1, 2, 3]))
                       .values(published_at=utcnow()))
        tx.commit()
    finally:
        worker.close()
        api.join(30)
    assert not api.is_alive() and errors == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(job_chunks).where(this_job)
                            ).scalar_one() == 0
