"""Fencing: a worker frozen past its lease (SIGSTOP) loses its job to another worker, and when
it wakes (SIGCONT) its late result is refused, logged and counted; the job ends once, with the
second worker's result. A live worker renews its leases, however long its batch runs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from service.store.db import jobs
from tests.faults.conftest import Stack
from tests.support.processes import WorkerProcess


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def row(s: Stack, job_id: str) -> dict[str, object]:
    with s.engine.connect() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())


def test_a_worker_frozen_past_its_lease_writes_nothing_when_it_wakes(
    stack: Callable[..., Stack],
) -> None:
    s = stack(lease_seconds=3, task_time_limit=60, republish_after=0.5)
    frozen = s.start_worker()
    tenant = s.tenant()
    job_id = tenant.submit("sleepy", [[2500, 1]])  # 2.5 s of predict()
    until(lambda: row(s, job_id)["status"] == "running", 30, "worker A to claim the job")
    os.killpg(frozen.proc.pid, signal.SIGSTOP)  # main and pool processes: no renewal either
    other = WorkerProcess(s.settings, s.directory / "worker-b.log")
    try:
        until(lambda: s.reconcile()["republished"] == 1, 20, "A's lease to end")
        until(lambda: row(s, job_id)["attempts"] == 2, 20, "worker B to take the job over")
        os.killpg(frozen.proc.pid, signal.SIGCONT)  # A's predict() is done: it writes now
        line = f"discarded the outcome of job {job_id} (attempt 1)"
        until(lambda: line in frozen.output(), 20, "A to discard its result")
        done = tenant.wait(job_id, timeout=30)
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT)
        other.stop()
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert tenant.get(f"/v1/jobs/{job_id}/result").json()["predictions"] == \
        pytest.approx([2500 + 2])
    assert "another worker took it over after this one's lease ended" in frozen.output()
    assert "discarded" not in other.output()


def test_a_live_batch_longer_than_its_lease_keeps_its_job(stack: Callable[..., Stack]) -> None:
    """A 7-second predict() under a 3-second lease: renewed, never taken over or run twice."""
    s = stack(lease_seconds=3, task_time_limit=60, republish_after=0.5)
    s.start_worker()
    tenant = s.tenant()
    job_id = tenant.submit("sleepy", [[7000, 1]])
    until(lambda: row(s, job_id)["status"] == "running", 30, "the claim")
    for _ in range(12):  # the reconciler runs throughout and finds nothing to take over
        assert s.reconcile()["republished"] == 0
        time.sleep(0.5)
    done = tenant.wait(job_id, timeout=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1
