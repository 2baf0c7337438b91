"""Recovery and fairness, for the reconciler and for a batch that meets a lost job: jobs whose
worker died (an expired lease) are taken over or, after too many attempts, failed; jobs whose
message was lost are sent again; jobs that waited too long move up a priority level. Every
step is one conditional UPDATE, so running it twice, or beside a late redelivery, is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from service.core.messaging import PREDICT_QUEUES
from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs.lifecycle import Claimed
from service.jobs.priorities import higher
from service.store.db import jobs


def claim_expired(conn: Connection, job_id: str, lease_seconds: float,
                  max_attempts: int, worker: str | None = None) -> Claimed | None:
    """Take one running job whose lease expired (its worker died), under a new lease, if it
    has attempts left (`Ending.fail_exhausted` ends the others)."""
    now = utcnow()
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
               jobs.c.lease_until < now, jobs.c.n_chunks.is_(None),
               jobs.c.attempts < max_attempts)
        .values(lease_until=now + timedelta(seconds=lease_seconds),
                attempts=jobs.c.attempts + 1, worker=worker)
        .returning(jobs.c.id, jobs.c.model_id, jobs.c.inputs, jobs.c.n_rows, jobs.c.attempts,
                   jobs.c.queue, jobs.c.tenant, jobs.c.created_at, jobs.c.request_id,
                   jobs.c.shadow_model_id)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return None
    return Claimed(row.id, row.model_id, row.inputs, row.n_rows, row.attempts,
                   row.queue, row.tenant, row.created_at, row.request_id, row.shadow_model_id)


@dataclass(frozen=True)
class Cutoffs:
    """When a message counts as lost: sent before `busy` - or, on a queue that is empty in the
    broker (`idle_queues`), before `idle`. An empty queue cannot be holding a message that was
    sent seconds ago: it was lost with a restarted broker, or it sits in the prefetch of a
    worker that died or froze. A busy queue may just be slow, and is given longer."""

    busy: datetime
    idle: datetime
    idle_queues: frozenset[str] = frozenset()

    @classmethod
    def of(cls, now: datetime, busy_after: float, idle_after: float,
           idle_queues: Iterable[str] = ()) -> Cutoffs:
        return cls(now - timedelta(seconds=busy_after), now - timedelta(seconds=idle_after),
                   frozenset(idle_queues))

    def for_queue(self, *queues: str) -> datetime:
        """The cutoff of a message that may wait in any of `queues` (idle only if all are)."""
        return self.idle if self.idle_queues.issuperset(queues) else self.busy

    def sent_before(self, sent: ColumnElement[Any], queue: ColumnElement[Any]
                    ) -> ColumnElement[bool]:
        """SQL: a message sent at `sent` to `queue` counts as lost."""
        if not self.idle_queues:
            return sent < self.busy
        return or_(sent < self.busy, and_(queue.in_(self.idle_queues), sent < self.idle))


def due_for_republish(conn: Connection, cutoffs: Cutoffs, limit: int) -> list[tuple[str, str]]:
    """Queued jobs whose last message counts as lost, and running jobs whose lease expired
    (their worker died or froze): stamp them published now and return (id, queue) to send
    again."""
    now = utcnow()
    lost = and_(jobs.c.n_chunks.is_(None),  # bulk jobs: chunksweep.sweep
                or_(jobs.c.status == JobStatus.QUEUED.value,
                    and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now)),
                cutoffs.sent_before(jobs.c.published_at, jobs.c.queue))
    due = select(jobs.c.id).where(lost).order_by(jobs.c.created_at).limit(limit)
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(due.scalar_subquery()), lost)
        .values(published_at=now)
        .returning(jobs.c.id, jobs.c.queue)
    )
    return [(row.id, row.queue) for row in conn.execute(stmt)]


def promote(conn: Connection, cutoff: datetime, limit: int) -> list[tuple[str, str]]:
    """Move queued jobs whose last message is older than `cutoff` up one priority level, stamp
    them published now, and return (id, new queue) to send: the starvation rule. Shadow runs
    are not jobs (they wait on `SHADOW_QUEUE`, with no row here): never promoted."""
    now = utcnow()
    moved: list[tuple[str, str]] = []
    for queue in PREDICT_QUEUES[1:]:
        waiting = and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.queue == queue,
                       jobs.c.published_at < cutoff, jobs.c.n_chunks.is_(None))
        due = select(jobs.c.id).where(waiting).order_by(jobs.c.created_at).limit(limit)
        stmt = (update(jobs).where(jobs.c.id.in_(due.scalar_subquery()), waiting)
                .values(queue=higher(queue), published_at=now)
                .returning(jobs.c.id, jobs.c.queue))
        moved.extend((row.id, row.queue) for row in conn.execute(stmt))
    return moved
