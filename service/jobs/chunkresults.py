"""A succeeded job's result as chunks, read from SQL as a response body or a file is written."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, bindparam, select

from service.jobs import payloads
from service.store.db import job_chunks


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
