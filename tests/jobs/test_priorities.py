"""Priorities are queues: names and levels map to queues, and the starvation rule moves up."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidInput
from service.core.messaging import BULK, INTERACTIVE, NORMAL
from service.jobs import priorities


@pytest.mark.parametrize(("priority", "queue"), [
    ("interactive", INTERACTIVE), ("normal", NORMAL), ("bulk", BULK),
    (9, INTERACTIVE), (7, INTERACTIVE), (6, NORMAL), (3, NORMAL), (2, BULK), (0, BULK),
])
def test_names_and_levels_map_to_queues(priority: str | int, queue: str) -> None:
    assert priorities.queue_for(priority) == queue
    assert priorities.queue_for(priorities.name_of(queue)) == queue


@pytest.mark.parametrize("priority", ["urgent", 10, -1, True, 2.5, None])
def test_anything_else_is_refused_naming_the_field(priority: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        priorities.queue_for(priority)
    assert refused.value.field == "priority"


def test_a_waiting_job_moves_up_one_level_at_a_time() -> None:
    assert priorities.higher(BULK) == NORMAL
    assert priorities.higher(NORMAL) == INTERACTIVE
    assert priorities.higher(INTERACTIVE) is None
