"""Priorities are queues: a worker always takes from the highest non-empty queue first.

Starvation rule: the reconciler moves a job that has waited `promote_after` seconds in a queue
up one level (bulk -> normal -> interactive), so under a continuous stream of higher-priority
work a low-priority job waits at most about 2 x (promote_after + reconcile_interval) before it
competes first in, first out with the interactive jobs.
"""

from __future__ import annotations

from service.core.errors import InvalidInput
from service.core.messaging import BULK, INTERACTIVE, NORMAL, PREDICT_QUEUES

NAMES = {"interactive": INTERACTIVE, "normal": NORMAL, "bulk": BULK}


def queue_for(priority: object) -> str:
    """Map a priority name, or a level 0 (lowest) to 9 (highest), to its queue."""
    if isinstance(priority, str) and priority in NAMES:
        return NAMES[priority]
    if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 9:
        return INTERACTIVE if priority >= 7 else NORMAL if priority >= 3 else BULK
    raise InvalidInput("priority", "must be interactive, normal, bulk or a level from 0 to 9")


def name_of(queue: str) -> str:
    return queue.removeprefix("predict.")


def higher(queue: str) -> str | None:
    """The queue one level above, or None for the highest."""
    index = PREDICT_QUEUES.index(queue)
    return PREDICT_QUEUES[index - 1] if index > 0 else None
