"""SIGTERM to a worker that holds buffered messages: nothing it holds is lost."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.faults.conftest import Stack

SETOSA = [5.1, 3.5, 1.4, 0.2]


def test_sigterm_hands_back_buffered_messages_and_the_next_worker_runs_them(
    stack: Callable[..., Stack],
) -> None:
    # A long flush interval keeps the messages in the worker's buffer, unacknowledged.
    s = stack(batch_flush_interval=30.0, batch_flush_every=1000, republish_after=3600)
    worker = s.start_worker()
    tenant = s.tenant()
    ids = [tenant.submit("iris", [SETOSA]) for _ in range(5)]
    deadline = time.monotonic() + 10
    while s.redis_queue_length("predict.normal") > 0:  # fetched into the buffer
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert {tenant.get(f"/v1/jobs/{i}").json()["status"] for i in ids} == {"queued"}
    worker.stop()  # SIGTERM: warm shutdown
    assert "Warm shutdown" in worker.output()
    # No reconciler here: only what the first worker handed back to Redis can run.
    s.start_worker(batch_flush_interval=0.005)
    for job_id in ids:
        assert tenant.wait(job_id, timeout=60)["status"] == "succeeded"
