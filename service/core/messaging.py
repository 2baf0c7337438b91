"""The messaging contract between the API and the workers: queue and task names, what a
message carries, and the one way to publish after a commit.

A message carries ids only (job ids, `job-id/seq` chunk ids, webhook event ids), as JSON. The
SQL row is the truth; a message is a doorbell. So a publish that fails loses nothing: the row
is committed, and the reconciler sends it again (`publish_or_defer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter

log = logging.getLogger(__name__)

INTERACTIVE = "predict.interactive"
NORMAL = "predict.normal"
BULK = "predict.bulk"
#: Highest priority first: the order workers listen in. Single jobs of each priority.
PREDICT_QUEUES = (INTERACTIVE, NORMAL, BULK)
#: Chunks of bulk jobs, whatever their priority (`service/jobs/dispatch.py` orders them): read
#: by bulk processes of their own, so a chunk never takes the capacity of single jobs.
CHUNK_QUEUE = "predict.chunks"
#: The chunks the dispatch sends ahead of those waiting in CHUNK_QUEUE: a tenant's while it
#: has none running and another tenant has (its first chunk need not wait behind theirs).
#: Bulk processes read it first.
CHUNK_FRONT_QUEUE = "predict.chunks.front"
WEBHOOK_QUEUE = "webhooks"
MAINTENANCE_QUEUE = "maintenance"
#: Shadow runs of a rollout (ids of jobs that ended): the lowest priority of a worker's queues,
#: never a job's own work, never promoted, never counted by admission.
SHADOW_QUEUE = "predict.shadow"
#: Shadows of bulk chunks (`job-id/seq`): read by the bulk processes after their chunks, so a
#: chunk's long predict() never takes the capacity of single jobs.
CHUNK_SHADOW_QUEUE = "predict.chunks.shadow"
#: Where chunk messages wait, in the order bulk processes read them.
CHUNK_LANES = (CHUNK_FRONT_QUEUE, CHUNK_QUEUE)
QUEUES = (*PREDICT_QUEUES, *CHUNK_LANES, WEBHOOK_QUEUE, MAINTENANCE_QUEUE, SHADOW_QUEUE,
          CHUNK_SHADOW_QUEUE)

PREDICT_TASK = "predq.predict"  # job ids of one submit group
CHUNK_TASK = "predq.predict_chunks"  # bulk jobs: `job-id/seq` of chunks, one per message
DELIVER_TASK = "predq.deliver"  # webhook event ids
RECONCILE_TASK = "predq.reconcile"
SCHEDULE_TASK = "predq.schedules"
SHADOW_TASK = "predq.shadow"  # ids of ended jobs to run on their shadow version



def chunk_id(job_id: str, seq: int) -> str:
    """How a bulk job's chunk travels in a message: `job-id/seq`."""
    return f"{job_id}/{seq}"


def parse_chunk_id(text: str) -> tuple[str, int] | None:
    job_id, _, seq = text.rpartition("/")
    return (job_id, int(seq)) if job_id and seq.isdigit() else None


PUBLISH_DEFERRED = Counter(
    "predq_publish_deferred_total",
    "Messages not published after their commit (broker down); the reconciler sends them.",
    ["task"])


class Publisher(Protocol):
    """Sends one message of `task` carrying `ids` to `queue`; raises if the broker is down."""

    def __call__(self, task: str, queue: str, ids: Sequence[str],
                 countdown: float | None = None) -> None: ...


def publish_or_defer(publish: Publisher | None, task: str, queue: str, ids: Sequence[str],
                     countdown: float | None = None) -> bool:
    """Publish committed ids, or leave them to the reconciler: log, count, never raise.
    Returns whether the message went out."""
    if not ids:
        return True
    if publish is None:
        return False
    try:
        publish(task, queue, list(ids), countdown)
        return True
    except Exception as exc:  # noqa: BLE001 - the rows are committed: nothing is lost
        PUBLISH_DEFERRED.labels(task).inc(len(ids))
        log.warning("could not publish %d ids of %s to %s (%s); the reconciler will send them",
                    len(ids), task, queue, exc)
        return False
