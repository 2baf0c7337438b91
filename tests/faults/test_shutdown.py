"""SIGTERM to a worker that holds buffered messages: nothing it holds is lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from service.cli.up import stop_all
from tests.faults.conftest import Stack

SETOSA = [5.1, 3.5, 1.4, 0.2]


def test_sigterm_hands_back_buffered_messages_and_the_next_worker_runs_them(
    stack: Callable[..., Stack],
) -> None:
    # Both pool processes busy, and a long flush interval: the next messages stay in the
    # worker's buffer, unacknowledged.
    s = stack(batch_flush_interval=30.0, batch_flush_every=1000, republish_after=3600)
    worker = s.start_worker()
    tenant = s.tenant()
    busy = [tenant.submit("sleepy", [[3000, 1]]) for _ in range(2)]  # one batch each
    deadline = time.monotonic() + 10
    while {tenant.get(f"/v1/jobs/{i}").json()["status"] for i in busy} != {"running"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ids = [tenant.submit("iris", [SETOSA]) for _ in range(5)]
    deadline = time.monotonic() + 10
    while s.redis_queue_length("predict.normal") > 0:  # fetched into the buffer
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert {tenant.get(f"/v1/jobs/{i}").json()["status"] for i in ids} == {"queued"}
    os.kill(worker.proc.pid, signal.SIGTERM)  # warm shutdown, as `docker stop` asks for it
    worker.proc.wait(60)
    assert "Warm shutdown" in worker.output()
    # The batches in hand finished; the buffered messages were not run, but handed back:
    assert [tenant.get(f"/v1/jobs/{i}").json()["status"] for i in busy + ids] == \
        ["succeeded"] * 2 + ["queued"] * 5
    # No reconciler here: only what the first worker handed back to Redis can run.
    s.start_worker(batch_flush_interval=0.005)
    for job_id in ids:
        assert tenant.wait(job_id, timeout=60)["status"] == "succeeded"


def test_sigterm_lets_the_batch_in_hand_finish_before_the_worker_exits(
    stack: Callable[..., Stack],
) -> None:
    """Draining a worker host: SIGTERM to the worker's main process (what `docker stop` or
    systemd sends) lets the batch it is running commit, then the worker exits; the job is
    not run again elsewhere."""
    s = stack()
    worker = s.start_worker()
    tenant = s.tenant()
    job_id = tenant.submit("sleepy", [[3000, 1]])  # 3 s of predict()
    deadline = time.monotonic() + 30
    while tenant.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    began = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(60)
    drained = time.monotonic() - began
    job = tenant.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert "Warm shutdown" in worker.output()
    print(f"drained in {drained:.1f} s with a 3 s batch in hand")  # docs/production.md


def test_predq_up_stopping_a_worker_lets_its_batch_finish_and_logs_no_traceback(
    stack: Callable[..., Stack],
) -> None:
    """`predq up`'s Ctrl-C (and the test harness) stop a worker with `stop_all`: SIGTERM to its
    main process only, so Celery's warm shutdown stops the pool itself. A SIGTERM to the whole
    process group killed the pool process under the batch (the job was left running, for a
    lease to expire) and raced Celery's shutdown into a traceback on stderr."""
    s = stack()
    worker = s.start_worker()
    tenant = s.tenant()
    job_id = tenant.submit("sleepy", [[2000, 1]])  # 2 s of predict()
    deadline = time.monotonic() + 30
    while tenant.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop_all([worker.proc])
    job = tenant.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert "Warm shutdown" in worker.output() and "Traceback" not in worker.output()
