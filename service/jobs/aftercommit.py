"""What follows a committed Ending (service/jobs/ending.py), one hook per concern, the way
dramatiq's middleware keeps cross-cutting effects out of its actors: count and log the ended
jobs, tell Redis (cache entries, drained counters, wake-ups for synchronous callers, in one
round trip), publish the webhook events and the messages the transaction asked for.

Each is an optimisation over SQL or a doorbell, never the truth: a hook that fails loses a
metric, a wake-up (the caller re-reads SQL at its timeout) or a message (the reconciler sends
it again), never a job.
"""

from __future__ import annotations

import logging
from collections import Counter

import redis
from sqlalchemy import Engine

from service.core.messaging import DELIVER_TASK, WEBHOOK_QUEUE, Publisher, publish_or_defer
from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs import wakeups
from service.jobs.dispatch import Capacity, dispatch
from service.jobs.ending import AfterCommit, Ending, JobEnds, Work
from service.ops import metrics
from service.ops.heartbeats import Tally
from service.store.db import not_durable

log = logging.getLogger(__name__)


def count(ending: Ending) -> None:
    """Metrics of every ended job, and its log line: a failure is worth a warning; a success,
    a cancel or an expiry is a DEBUG line (one per job is costly at a thousand a second)."""
    now = utcnow()
    for end in ending.ends:
        metrics.job_ended(end.model, end.tenant, end.status.value, end.created_at, now,
                          end.rows, end.version)
        failed = end.status == JobStatus.FAILED
        log.log(logging.WARNING if failed else logging.DEBUG, "job finished",
                extra={"job_id": end.id, "tenant": end.tenant, "request_id": end.request_id,
                       "model": end.model, "version": end.version, "status": end.status.value,
                       "rows": end.rows, "attempt": end.attempt, "error": end.error})


class Announce:
    """One round trip to Redis: cache entries, the jobs that left each queue, and the
    wake-up of synchronous callers waiting on any ended job."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def __call__(self, ending: Ending) -> None:
        drained = Counter(end.queue for end in ending.ends if not end.bulk)
        wakeups.after_batch(self.client, [end.id for end in ending.ends], drained,
                            ending.cached)


class Publish:
    """The webhook events recorded and the messages asked for, each published or left to
    the reconciler (`publish_or_defer`)."""

    def __init__(self, publish: Publisher | None) -> None:
        self.publish = publish

    def __call__(self, ending: Ending) -> None:
        publish_or_defer(self.publish, DELIVER_TASK, WEBHOOK_QUEUE, ending.events)
        for send in ending.sends:
            publish_or_defer(self.publish, send.task, send.queue, send.ids, send.countdown)


class TallyEnds:
    """A worker process counts the jobs it ended and the rows it predicted, for the
    dashboard's workers."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def __call__(self, ending: Ending) -> None:
        self.tally.add(len(ending.ends), ending.rows_predicted)


def redispatch(ending: Ending, ends: JobEnds) -> None:
    """A bulk chunk finished or a bulk job ended: its slot goes to the next chunk."""
    if ending.frees_slots:
        ends.redispatch()


def job_ends(engine: Engine, client: redis.Redis | None, publish: Publisher | None,
             max_inline: int, tally: Tally | None = None, min_slots: int = 4) -> JobEnds:
    """The process's JobEnds with every hook, and its dispatch of bulk chunks (`min_slots`
    chunks in flight at least; two per bulk process of the live workers, if that is more):
    what the API, the workers and the reconciler each compose."""
    hooks: list[AfterCommit] = [count]
    if tally is not None:
        hooks.append(TallyEnds(tally))
    if client is not None:
        hooks.append(Announce(client))
    hooks.append(Publish(publish))
    ends = JobEnds(engine, hooks, max_inline)
    capacity = Capacity(client, min_slots)
    ends.hooks.append(lambda ending: redispatch(ending, ends))
    ends.dispatcher = lambda work: _dispatch(ends, capacity, work)
    return ends


def _dispatch(ends: JobEnds, capacity: Capacity, work: Work | None) -> int:
    with ends.begin() as ending:
        if work is not None:
            work(ending.conn)
        # Chunks stamped sent and lost: the sweep re-sends them. An upload's chunk stored here
        # and lost is in no job anyone was told of: the upload's last commit is durable, and
        # makes every commit before it so.
        not_durable(ending.conn)
        return dispatch(ending, capacity())

