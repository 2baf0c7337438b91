"""Periodic maintenance: the reconciler that rebuilds Redis's doorbells from the SQL truth."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Collection
from datetime import timedelta

import redis

from service.core import times
from service.core.messaging import (
    CHUNK_LANES,
    DELIVER_TASK,
    PREDICT_QUEUES,
    PREDICT_TASK,
    SHADOW_QUEUE,
    SHADOW_TASK,
    WEBHOOK_QUEUE,
)
from service.core.settings import Settings
from service.jobs import chunkstore, chunksweep, idempotency, recovery, shadows, uploads
from service.jobs.ending import Ending, JobEnds
from service.ops import metrics, queuehistory
from service.tenants import retention
from service.webhooks import events as webhook_events

log = logging.getLogger(__name__)

RECONCILE_LIMIT = 10_000  # most jobs one reconciler run takes up per step
LOCK = "predq:reconcile:lock"


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


def reconcile(ends: JobEnds, settings: Settings, limit: int = RECONCILE_LIMIT,
              idle_queues: Collection[str] = (), sweep_retention: bool = True
              ) -> dict[str, int]:
    """Fail jobs that exhausted their attempts, expire queued jobs past their deadline, move
    long-waiting single jobs up a priority level, then send again every queued job whose
    message was lost and every running job whose worker died, and every bulk chunk alike;
    then fill the free bulk slots (`dispatch`). A message counts as lost after
    `republish_after` seconds, or `republish_idle_after` on a queue that is empty in Redis
    (`idle_queues`: lost with a restarted broker, or held by a dead worker). Running it twice,
    or beside a late redelivery, is harmless: claims and outcomes are conditional. Every job
    it ends, and every message it sends, goes through `ends` (after each commit)."""
    now = times.utcnow()
    with ends.begin() as ending:
        failed = ending.fail_exhausted(settings.max_attempts)
        expired = ending.expire(limit=limit)
    cutoffs = recovery.Cutoffs.of(now, settings.republish_after, settings.republish_idle_after,
                                  idle_queues)
    promote_before = now - timedelta(seconds=settings.promote_after)
    with ends.begin() as ending:
        promoted = recovery.promote(ending.conn, promote_before, limit)
        due = promoted + recovery.due_for_republish(ending.conn, cutoffs, limit)
        _send_jobs(ending, due, settings.submit_group_max)
    with ends.begin() as ending:  # bulk jobs: lost chunk messages, dead workers' chunks
        stale = now - timedelta(seconds=settings.abandoned_upload_after)
        conn = ending.conn
        abandoned = chunkstore.delete_abandoned(conn, stale) + \
            uploads.delete_abandoned(conn, stale)
        chunk_sends, chunk_failed = chunksweep.sweep(ending, cutoffs, settings.max_attempts,
                                                     limit)
    chunk_sends += ends.redispatch()  # chunks that have a slot (none lost: none was free)
    metrics.UPLOAD_CHUNKS_ABANDONED.inc(abandoned)
    swept = {"deleted": 0}
    if sweep_retention:
        with ends.engine.begin() as conn:  # finished jobs past their retention
            swept = retention.sweep(conn, settings.retention_days * 86400, limit)
            idempotency.purge(conn, now - idempotency.KEEP)
    lost_after = settings.republish_idle_after if WEBHOOK_QUEUE in idle_queues \
        else settings.republish_after
    with ends.begin() as ending:  # webhook events due: ones whose message was lost, retries
        events = webhook_events.due(ending.conn, lost_after, limit)
        group = settings.submit_group_max
        for start in range(0, len(events), group):
            ending.send(DELIVER_TASK, WEBHOOK_QUEUE, events[start:start + group])
    shadows_sent = _resend_shadows(ends, settings, idle_queues, limit)
    failed += chunk_failed
    republished = len(due) - len(promoted)
    # Lost messages sent again and jobs given up on are the operator's business; expiries
    # and promotions are jobs doing what their options asked.
    if failed or due or expired:
        say = log.warning if failed or republished else log.info
        say("reconciler: %d jobs failed after %d attempts, %d expired, %d moved up a priority "
            "level, %d sent again", len(failed), settings.max_attempts, len(expired),
            len(promoted), republished)
    return {"failed": len(failed), "expired": len(expired), "promoted": len(promoted),
            "republished": republished, "webhooks": len(events),
            "chunks": chunk_sends, "deleted": swept["deleted"],
            "abandoned_chunks": abandoned, "shadows": shadows_sent}


def _resend_shadows(ends: JobEnds, settings: Settings, idle_queues: Collection[str],
                    limit: int) -> int:
    """Shadows whose message was lost: only while the shadow queue is empty in Redis (a
    shadow waiting behind a busy worker is not lost, and is not sent twice)."""
    if SHADOW_QUEUE not in idle_queues:
        return 0
    before = times.utcnow() - timedelta(seconds=settings.republish_idle_after)
    with ends.begin() as ending:
        lost = shadows.lost(ending.conn, before, limit)
        for start in range(0, len(lost), settings.submit_group_max):
            ending.send(SHADOW_TASK, SHADOW_QUEUE, lost[start:start + settings.submit_group_max])
    return len(lost)


def _send_jobs(ending: Ending, due: list[tuple[str, str]], group: int) -> None:
    """Single jobs to send again, one message per queue and `group` ids."""
    by_queue: dict[str, list[str]] = defaultdict(list)
    for job_id, queue in due:
        by_queue[queue].append(job_id)
    for queue, ids in by_queue.items():
        for start in range(0, len(ids), group):
            ending.send(PREDICT_TASK, queue, ids[start:start + group])


def reconcile_once(ends: JobEnds, client: redis.Redis, settings: Settings) -> dict[str, int]:
    """`reconcile`, unless another run holds the lock (two beats, or a run still going); the
    retention sweep at its own pace (`RetentionPace`)."""
    lock = client.lock(LOCK, timeout=max(60, 4 * settings.reconcile_interval))
    if not lock.acquire(blocking=False):
        log.info("reconciler already running elsewhere; skipped")
        return {}
    try:
        pace = RetentionPace(client)
        figures = reconcile(ends, settings, idle_queues=idle_queues(client),
                            sweep_retention=pace.due())
        pace.swept(figures["deleted"])
        if queuehistory.due(client):  # the dashboard's queue chart, one sample per period
            with ends.engine.connect() as conn:
                queuehistory.record(client, queuehistory.measure(conn))
        return figures
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def idle_queues(client: redis.Redis) -> set[str]:
    """The queues holding no message in Redis right now (unknown if Redis fails: none)."""
    watched = (*PREDICT_QUEUES, *CHUNK_LANES, WEBHOOK_QUEUE, SHADOW_QUEUE)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in watched:
            pipe.llen(queue)
        lengths = pipe.execute()
    except redis.RedisError:
        return set()
    return {queue for queue, n in zip(watched, lengths, strict=True) if n == 0}
