"""Transactions that take several chunks of one job take them in seq order, and a job's row
before its chunks, so they queue one behind the other and never deadlock (PostgreSQL's row
locks; SQLite runs one writer at a time).

A worker finishing chunk k holds it while it stamps the next unsent chunks (after k). The plan
a small or fresh table gets reads rows in the heap's order, where a chunk updated since it was
written (claimed, finished) comes after the others: an UPDATE or DELETE that locked rows as it
read them would hold a later chunk while it waits for chunk k."""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, func, select, text, update

from service.core.messaging import parse_chunk_id
from service.core.times import utcnow
from service.jobs import chunkclaims, chunkstore, chunksweep, recovery, uploads
from service.jobs.ending import Ending, exhausted_error
from service.jobs.requests import JobRequest
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs

ROWS = np.ones((10, 4))
Step = Callable[[Connection], object]


@pytest.fixture
def job_id(engine: Engine) -> Iterator[str]:
    """A fresh job id, on PostgreSQL; its rows are deleted afterwards (no other test's
    reconciler may find a job left running)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite runs one writer at a time")
    job_id = str(uuid.uuid4())
    yield job_id
    with engine.begin() as conn:
        conn.execute(delete(job_chunks).where(job_chunks.c.job_id == job_id))
        conn.execute(delete(jobs).where(jobs.c.id == job_id))


def _beside(engine: Engine, worker_holds: Step, other: Step, worker_goes_on: Step) -> None:
    """A worker's (or the API's) transaction runs `worker_holds`; `other` runs in its own
    transaction, with the heap-order plan, and must wait for it; then the first transaction
    runs `worker_goes_on` and commits. PostgreSQL would abort one of the two on a deadlock."""
    errors: list[BaseException] = []

    def run_other() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL enable_indexscan = off"))
                conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                other(conn)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    first = engine.connect()
    tx = first.begin()
    thread = threading.Thread(target=run_other)
    try:
        worker_holds(first)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # it waits for the first transaction
        worker_goes_on(first)
        tx.commit()
    finally:
        first.close()
        if thread.ident is not None:
            thread.join(30)
    assert not thread.is_alive() and errors == []


def _chunk(job_id: str, seq: int) -> ColumnElement[bool]:
    return and_(job_chunks.c.job_id == job_id, job_chunks.c.seq == seq)


def test_discarding_an_upload_waits_for_a_worker_finishing_a_chunk(
    engine: Engine, job_id: str,
) -> None:
    with engine.begin() as conn:
        for seq in range(4):
            chunkstore.add_chunk(conn, job_id, seq, ROWS)
    with engine.begin() as conn:  # chunk 0 claimed: its row version moves after the others
        conn.execute(update(job_chunks).where(_chunk(job_id, 0))
                     .values(status="running", published_at=utcnow()))
    _beside(engine,
            # A worker finishing chunk 0 (its row locked) ...
            lambda worker: worker.execute(update(job_chunks).where(_chunk(job_id, 0))
                                          .values(status="done")),
            lambda api: uploads.discard(api, job_id),
            # ... then stamps the next chunks sent, in the same transaction.
            lambda worker: worker.execute(update(job_chunks).where(
                job_chunks.c.job_id == job_id, job_chunks.c.seq.in_([1, 2, 3]))
                .values(published_at=utcnow())))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(job_chunks).where(
            job_chunks.c.job_id == job_id)).scalar_one() == 0


def test_the_sweep_sending_an_expired_chunk_again_waits_for_the_worker_finishing_it(
    engine: Engine, job_id: str, models: dict[str, ModelInfo],
) -> None:
    """A worker whose lease ran out (a long pause) finishes chunk 1 just as the reconciler's
    sweep sends chunk 1 again and chunk 2, whose message was lost; the worker's dispatch then
    takes chunk 3, skipping what the sweep holds rather than waiting for it."""
    with engine.begin() as conn:
        chunkstore.insert_job(conn, job_id, JobRequest("chunk-locks", models["iris"]), 40, 4)
        for seq in range(4):
            chunkstore.add_chunk(conn, job_id, seq, ROWS)
    with engine.begin() as conn:
        zero = chunkclaims.claim(conn, job_id, 0, 60)
        assert zero is not None
        assert chunkclaims.finish(conn, zero.with_rows(ROWS), {"predictions": np.zeros(10)})
    with engine.begin() as conn:
        claimed = chunkclaims.claim(conn, job_id, 1, -1)  # a lease that has run out
        assert claimed is not None
        late = claimed.with_rows(ROWS)
    cutoffs = recovery.Cutoffs(utcnow() - timedelta(seconds=60), utcnow())
    swept: list[list[tuple[str, str, int]]] = []
    with engine.begin() as conn:  # chunk 2 sent before: the sweep sends it again with 1
        chunkstore.mark_published(conn, job_id, [2])
        conn.execute(update(job_chunks).where(_chunk(job_id, 2)).values(
            published_at=utcnow() - timedelta(seconds=120)))
    _beside(engine,
            lambda worker: chunkclaims.finish(worker, late, {"predictions": np.zeros(10)}),
            lambda reconciler: swept.append(_sweep(reconciler, cutoffs)[0]),
            lambda worker: chunkstore.stamp_next(worker, job_id, 1))
    assert swept == [[(job_id, "predict.chunks", 1), (job_id, "predict.chunks", 2)]]
    with engine.connect() as conn:
        rows = conn.execute(select(job_chunks.c.seq, job_chunks.c.status,
                                   job_chunks.c.published_at.is_not(None))
                            .where(job_chunks.c.job_id == job_id)
                            .order_by(job_chunks.c.seq)).all()
        assert [tuple(row) for row in rows] == [(0, "done", False), (1, "done", True),
                                                (2, "pending", True), (3, "pending", True)]
        assert conn.execute(select(jobs.c.rows_done).where(jobs.c.id == job_id)).scalar() == 20


def test_the_sweep_failing_an_exhausted_upload_waits_for_its_next_chunk(
    engine: Engine, job_id: str, models: dict[str, ModelInfo],
) -> None:
    """An upload's chunk transaction takes the job's row, then stamps the next chunks; the
    sweep fails a job whose chunk exhausted its attempts before it stamps any chunk."""
    req = JobRequest("chunk-locks", models["iris"])
    with engine.begin() as conn:
        uploads.add(conn, job_id, req, 0, ROWS)
        uploads.add(conn, job_id, req, 1, ROWS)
        conn.execute(update(job_chunks).where(_chunk(job_id, 1)).values(  # its workers died
            status="running", attempts=3, published_at=utcnow(),
            lease_until=utcnow() - timedelta(seconds=1)))
    cutoffs = recovery.Cutoffs(utcnow() - timedelta(seconds=60), utcnow())
    swept: list[tuple[list[tuple[str, str, int]], list[str]]] = []
    _beside(engine,
            # The upload's next chunk: the job's counts first (its row locked) ...
            lambda api: api.execute(update(jobs).where(jobs.c.id == job_id)
                                    .values(n_rows=jobs.c.n_rows + len(ROWS))),
            lambda reconciler: swept.append(_sweep(reconciler, cutoffs)),
            # ... then its next chunk stamped sent.
            lambda api: chunkstore.stamp_next(api, job_id, 1))
    assert swept == [([], [job_id])]
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.status, jobs.c.error).where(jobs.c.id == job_id)
                            ).one() == ("failed", exhausted_error(3))


def _sweep(conn: Connection, cutoffs: recovery.Cutoffs
           ) -> tuple[list[tuple[str, str, int]], list[str]]:
    """The reconciler's sweep on `conn`: the chunks it sends (job id, queue, seq) and the jobs
    it fails."""
    ending = Ending(conn)
    _count, failed = chunksweep.sweep(ending, cutoffs, 3, 100)
    sent = [(*parse_chunk_id(send.ids[0]), send.queue) for send in ending.sends]  # type: ignore[misc]
    return [(job_id, queue, seq) for job_id, seq, queue in sent], failed
