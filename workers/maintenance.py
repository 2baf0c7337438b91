"""Periodic maintenance: the reconciler that rebuilds Redis's doorbells from the SQL truth."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from datetime import timedelta

import redis
from sqlalchemy import Engine

from service.core import times
from service.core.messaging import (
    CHUNK_TASK,
    DELIVER_TASK,
    PREDICT_TASK,
    WEBHOOK_QUEUE,
    Publisher,
    publish_or_defer,
)
from service.core.settings import Settings
from service.jobs import chunks, idempotency, recovery, uploads
from service.jobs import lifecycle as jobs
from service.ops import metrics
from service.tenants import retention
from service.webhooks import events as webhook_events

log = logging.getLogger(__name__)

RECONCILE_LIMIT = 10_000  # most jobs one reconciler run takes up per step


class RetentionPace:
    """The retention sweep runs once a minute at most, whatever the reconciler's pace, across
    every beat (a Redis key); at once again while it has a backlog, that is, while a run
    deletes as many jobs as one run may."""

    MARK = "predq:retention:ran"

    def __init__(self, client: redis.Redis, every: float = 60.0) -> None:
        self.client, self.every = client, every

    def due(self) -> bool:
        return bool(self.client.set(self.MARK, 1, nx=True, ex=int(self.every)))

    def swept(self, deleted: int, limit: int = RECONCILE_LIMIT) -> None:
        if deleted >= limit:
            self.client.delete(self.MARK)


def reconcile(engine: Engine, settings: Settings, publish: Publisher,
              limit: int = RECONCILE_LIMIT, idle_queues: Collection[str] = (),
              sweep_retention: bool = True) -> dict[str, int]:
    """Fail jobs that exhausted their attempts, expire queued jobs past their deadline, move
    long-waiting jobs up a priority level, then send again every queued job whose message was
    lost and every running job whose worker died. A message counts as lost after
    `republish_after` seconds, or `republish_idle_after` on a queue that is empty in Redis
    (`idle_queues`: lost with a restarted broker, or held by a dead worker). Running it twice,
    or beside a late redelivery, is harmless: claims and outcomes are conditional."""
    with engine.begin() as conn:
        failed = recovery.fail_exhausted(conn, settings.max_attempts)
        expired = jobs.expire(conn, limit=limit)
        new_events = webhook_events.record(conn, failed + expired,
                                           settings.webhook_max_inline_bytes)
        ended = jobs.labels_of(conn, failed + expired)
    metrics.jobs_ended(ended)
    now = times.utcnow()
    with engine.begin() as conn:
        promoted = recovery.promote(conn, now - timedelta(seconds=settings.promote_after), limit)
        bulk_promoted = chunks.promote(conn, now - timedelta(seconds=settings.promote_after),
                                       limit)
    cutoffs = recovery.Cutoffs.of(now, settings.republish_after, settings.republish_idle_after,
                                  idle_queues)
    with engine.begin() as conn:
        due = promoted + recovery.due_for_republish(conn, cutoffs, limit)
    by_queue: dict[str, list[str]] = defaultdict(list)
    for job_id, queue in due:
        by_queue[queue].append(job_id)
    with engine.begin() as conn:  # bulk jobs: lost chunk messages, dead workers' chunks
        stale = now - timedelta(seconds=settings.abandoned_upload_after)
        abandoned = chunks.delete_abandoned(conn, stale) + uploads.delete_abandoned(conn, stale)
        chunk_sends, chunk_failed = chunks.sweep(conn, cutoffs, settings.bulk_window,
                                                 settings.max_attempts, limit)
        new_events += webhook_events.record(conn, chunk_failed, settings.webhook_max_inline_bytes)
        ended = jobs.labels_of(conn, chunk_failed)
    metrics.jobs_ended(ended)
    metrics.UPLOAD_CHUNKS_ABANDONED.inc(abandoned)
    swept = {"deleted": 0}
    if sweep_retention:
        with engine.begin() as conn:  # finished jobs past their retention
            swept = retention.sweep(conn, settings.retention_days * 86400, limit)
            idempotency.purge(conn, now - idempotency.KEEP)
    lost_after = settings.republish_idle_after if WEBHOOK_QUEUE in idle_queues \
        else settings.republish_after
    with engine.begin() as conn:  # webhook events due: new ones whose message was lost, retries
        events = new_events + webhook_events.due(conn, lost_after, limit)
    sends = [(PREDICT_TASK, queue, ids) for queue, ids in by_queue.items()]
    sends.append((DELIVER_TASK, WEBHOOK_QUEUE, events))
    for task, queue, ids in sends:
        for start in range(0, len(ids), settings.submit_group_max):
            publish_or_defer(publish, task, queue, ids[start:start + settings.submit_group_max])
    for job_id, queue, seq in bulk_promoted + chunk_sends:
        publish_or_defer(publish, CHUNK_TASK, queue, [chunks.chunk_id(job_id, seq)])
    failed += chunk_failed
    if failed or due or expired:
        log.warning("reconciler: %d jobs failed after %d attempts, %d expired, %d moved up a "
                    "priority level, %d sent again", len(failed), settings.max_attempts,
                    len(expired), len(promoted), len(due) - len(promoted))
    return {"failed": len(failed), "expired": len(expired), "promoted": len(promoted),
            "republished": len(due) - len(promoted), "webhooks": len(events),
            "chunks": len(chunk_sends), "deleted": swept["deleted"],
            "abandoned_chunks": abandoned}
