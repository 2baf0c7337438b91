"""The one publish-or-defer: a failed publish is logged and counted, never raised."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from service.core.messaging import CHUNK_TASK, PUBLISH_DEFERRED, publish_or_defer


class Broker:
    def __init__(self, up: bool) -> None:
        self.up = up
        self.sent: list[tuple[str, str, list[str], float | None]] = []

    def __call__(self, task: str, queue: str, ids: Sequence[str],
                 countdown: float | None = None) -> None:
        if not self.up:
            raise ConnectionError("Redis is down")
        self.sent.append((task, queue, list(ids), countdown))


def test_a_publish_goes_out_with_its_task_queue_and_ids() -> None:
    broker = Broker(up=True)
    assert publish_or_defer(broker, CHUNK_TASK, "predict.bulk", ["j/0", "j/1"], 2.0)
    assert broker.sent == [(CHUNK_TASK, "predict.bulk", ["j/0", "j/1"], 2.0)]


def test_a_failed_publish_is_logged_counted_and_left_to_the_reconciler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = PUBLISH_DEFERRED.labels(CHUNK_TASK)._value.get()
    with caplog.at_level(logging.WARNING, logger="service.core.messaging"):
        assert not publish_or_defer(Broker(up=False), CHUNK_TASK, "predict.bulk", ["a", "b"])
    assert PUBLISH_DEFERRED.labels(CHUNK_TASK)._value.get() - before == 2
    assert "could not publish 2 ids of predq.predict_chunks to predict.bulk" in caplog.text
    assert "reconciler" in caplog.text


def test_nothing_to_publish_sends_nothing_and_no_publisher_defers() -> None:
    broker = Broker(up=True)
    assert publish_or_defer(broker, CHUNK_TASK, "predict.bulk", [])
    assert broker.sent == []
    assert not publish_or_defer(None, CHUNK_TASK, "predict.bulk", ["a"])
