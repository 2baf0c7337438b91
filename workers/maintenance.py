"""Periodic maintenance: the reconciler that rebuilds Redis's doorbells from the SQL truth."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from service import jobs
from service.config import Settings

log = logging.getLogger(__name__)
Publish = Callable[[str, list[str]], None]


def reconcile(engine: Engine, settings: Settings, publish: Publish,
              limit: int = 10_000) -> dict[str, int]:
    """Fail jobs that exhausted their attempts, then send again every queued job whose message
    was lost and every running job whose worker died. Running it twice, or beside a late
    redelivery, is harmless: claims and outcomes are conditional."""
    with engine.begin() as conn:
        failed = jobs.fail_exhausted(conn, settings.max_attempts)
    cutoff = jobs.utcnow() - timedelta(seconds=settings.republish_after)
    with engine.begin() as conn:
        due = jobs.due_for_republish(conn, cutoff, limit)
    by_queue: dict[str, list[str]] = defaultdict(list)
    for job_id, queue in due:
        by_queue[queue].append(job_id)
    for queue, ids in by_queue.items():
        for start in range(0, len(ids), settings.submit_group_max):
            publish(queue, ids[start:start + settings.submit_group_max])
    if failed or due:
        log.warning("reconciler: %d jobs failed after %d attempts, %d sent again",
                    len(failed), settings.max_attempts, len(due))
    return {"failed": len(failed), "republished": len(due)}
