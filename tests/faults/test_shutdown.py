"""SIGTERM to a worker that holds buffered messages: nothing it holds is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from service.cli.processes import stop_all
from tests.faults.conftest import Stack

SETOSA = [5.1, 3.5, 1.4, 0.2]


def _docker_stop(worker: subprocess.Popen[bytes]) -> None:
    os.kill(worker.pid, signal.SIGTERM)  # the main process only
    worker.wait(60)


def _predq_up_stop(worker: subprocess.Popen[bytes]) -> None:
    stop_all([worker])  # what `predq up` does to each child on Ctrl-C


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
    _docker_stop(worker.proc)  # warm shutdown
    assert "Warm shutdown" in worker.output()
    # The batches in hand finished; the buffered messages were not run, but handed back:
    assert [tenant.get(f"/v1/jobs/{i}").json()["status"] for i in busy + ids] == \
        ["succeeded"] * 2 + ["queued"] * 5
    # No reconciler here: only what the first worker handed back to Redis can run.
    s.start_worker(batch_flush_interval=0.005)
    for job_id in ids:
        assert tenant.wait(job_id, timeout=60)["status"] == "succeeded"


@pytest.mark.parametrize("stop", [_docker_stop, _predq_up_stop], ids=["docker-stop", "predq-up"])
def test_sigterm_lets_the_batch_in_hand_finish_before_the_worker_exits(
    stack: Callable[..., Stack], stop: Callable[[subprocess.Popen[bytes]], None],
) -> None:
    """Draining a worker host: SIGTERM to the worker's main process (what `docker stop`,
    systemd with KillMode=mixed, and `predq up` on Ctrl-C send) lets the batch it is running
    commit, then the worker exits; the job is not run again elsewhere. A SIGTERM to the whole
    process group (`predq up` sent one before) killed the pool process under the batch, left
    the job running for its lease to expire, and raced Celery's shutdown into a traceback."""
    s = stack()
    worker = s.start_worker()
    tenant = s.tenant()
    job_id = tenant.submit("sleepy", [[3000, 1]])  # 3 s of predict()
    deadline = time.monotonic() + 30
    while tenant.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    began = time.monotonic()
    stop(worker.proc)
    drained = time.monotonic() - began
    job = tenant.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert "Warm shutdown" in worker.output() and "Traceback" not in worker.output()
    print(f"drained in {drained:.1f} s with a 3 s batch in hand")  # docs/production.md
