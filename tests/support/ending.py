"""Final transitions run the way a worker runs them, for tests of the domain on a connection."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from service.jobs.ending import Ending
from service.jobs.lifecycle import Claimed, Outcome
from service.store.db import jobs


def finish(conn: Connection, outcomes: Sequence[Outcome]) -> int:
    """Write outcomes as `Runner` does (through an Ending); return how many were written."""
    rows = conn.execute(select(jobs.c.id, jobs.c.model_id, jobs.c.n_rows, jobs.c.queue,
                               jobs.c.tenant, jobs.c.created_at, jobs.c.inputs)
                        .where(jobs.c.id.in_([o.id for o in outcomes]))).all()
    attempts = {o.id: o.attempt for o in outcomes}
    claimed = {r.id: Claimed(r.id, r.model_id, r.inputs, r.n_rows, attempts[r.id], r.queue,
                             r.tenant, r.created_at) for r in rows}
    missing = {o.id: Claimed(o.id, 0, b"", 0, o.attempt) for o in outcomes
               if o.id not in claimed}
    return len(Ending(conn).write_outcomes(outcomes, {**missing, **claimed}))
