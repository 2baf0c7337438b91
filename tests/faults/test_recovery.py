"""Faults with real processes: Redis killed and restarted empty, workers killed mid-batch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import pytest
from sqlalchemy import Engine, delete, func, select

from service.core.settings import Settings
from service.models.registry import ModelInfo, add_model
from service.store.db import jobs as jobs_table
from service.store.db import webhook_events as webhook_events_table
from tests.faults.conftest import Stack
from tests.faults.crashing import MARKER, CrashOnMarker

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]


def _until(check: Callable[[], bool], timeout: float, step: Callable[[], object] | None = None,
           ) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        if step is not None:
            step()
        time.sleep(0.3)


def test_jobs_accepted_while_redis_was_down_or_lost_in_a_restart_run_once_it_is_back(
    stack: Callable[..., Stack],
) -> None:
    s = stack(republish_after=0.5)
    tenant = s.tenant()
    queued = [tenant.submit("iris", [SETOSA]) for _ in range(3)]  # no worker yet: still in Redis
    s.kill_redis()  # ... and now lost: this Redis keeps nothing on disk
    started = time.monotonic()
    accepted_while_down = [tenant.submit("iris", [VIRGINICA]) for _ in range(3)]
    assert time.monotonic() - started < 5  # the API does not stall on a dead broker
    assert tenant.get("/readyz").json()["checks"]["redis"].startswith("unavailable")
    s.start_redis()
    s.start_worker()
    ids = queued + accepted_while_down
    time.sleep(1.0)
    assert {tenant.get(f"/v1/jobs/{i}").json()["status"] for i in ids} == {"queued"}

    assert s.reconcile()["republished"] == 6
    for job_id in ids:
        job = tenant.wait(job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 1
    assert tenant.get(f"/v1/jobs/{queued[0]}/result").json()["predictions"] == ["setosa"]
    assert tenant.get(f"/v1/jobs/{ids[-1]}/result").json()["predictions"] == ["virginica"]
    # Nothing of these jobs is sent again. (The session's database is shared with the tests
    # run before this one in the process: a webhook retry one of them left may fall due now,
    # so the sweep's other counts are not this test's to assert.)
    again = s.reconcile()
    assert {k: again[k] for k in ("failed", "expired", "promoted", "republished")} == {
        "failed": 0, "expired": 0, "promoted": 0, "republished": 0}
    with s.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_events_table).where(
            webhook_events_table.c.job_id.in_(ids))).scalar_one() == 0


def test_a_worker_keeps_batching_after_redis_restarts_under_it(
    stack: Callable[..., Stack],
) -> None:
    # No reconciler help: only the worker's own consumer, which must reconnect and go on
    # batching. A 2 s flush interval keeps a job in its buffer when Redis dies under it.
    s = stack(republish_after=3600, batch_flush_interval=2.0)
    worker = s.start_worker()
    tenant = s.tenant()
    tenant.submit("iris", [SETOSA])
    _until(lambda: s.redis_queue_length("predict.normal") == 0, timeout=10)
    s.kill_redis()
    s.start_redis()
    _until(lambda: worker.output().count("Connected to") >= 2, timeout=60)
    time.sleep(5.5)  # the API pauses publishing for 5 s after its failed publish
    ids = [tenant.submit("iris", [VIRGINICA]) for _ in range(3)]
    for job_id in ids:
        assert tenant.wait(job_id, timeout=20)["status"] == "succeeded"


@pytest.fixture
def crashy(engine: Engine, settings: Settings, models: dict[str, ModelInfo], tmp_path: Path,
           ) -> Iterator[ModelInfo]:
    path = tmp_path / "crashy.joblib"
    joblib.dump(CrashOnMarker(joblib.load(models["iris"].artifact_path)), path)
    with engine.begin() as conn:
        info = add_model(conn, settings.model_dir, str(path), f"crashy-{uuid.uuid4().hex[:8]}", "1")
    yield info
    with engine.begin() as conn:
        conn.execute(delete(jobs_table).where(jobs_table.c.model_id == info.id))
        # The model's row stays: SQLite would give its id to the next model, which a worker
        # that knew this one would take for it (a version's metadata is cached for good).


def test_a_job_that_kills_its_worker_fails_after_max_attempts_and_its_neighbours_succeed(
    stack: Callable[..., Stack], crashy: ModelInfo,
) -> None:
    # No tight task_time_limit (it had to sit below the lease before leases were renewed):
    # under a loaded machine it killed healthy batches too, which then used up attempts.
    s = stack(lease_seconds=4, republish_after=0.2, max_attempts=3,
              batch_flush_interval=0.3)
    s.start_worker()
    tenant = s.tenant()
    rows = [[MARKER, 3.0, 5.0, 2.0]] + [SETOSA] * 4
    with ThreadPoolExecutor(5) as pool:  # together, so they share a micro-batch
        poison, *good = pool.map(lambda row: tenant.submit(crashy.name, [row]), rows)

    def final(job_id: str) -> bool:
        return tenant.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed")

    _until(lambda: all(final(i) for i in [poison, *good]), timeout=60, step=s.reconcile)
    for job_id in good:
        job = tenant.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job
        assert tenant.get(f"/v1/jobs/{job_id}/result").json()["predictions"] == ["setosa"]
    failed = tenant.get(f"/v1/jobs/{poison}").json()
    assert failed["status"] == "failed"
    assert failed["error"].startswith("gave up after 3 attempts: the worker running this job")
    assert failed["attempts"] == 3
    assert "runs alone" in s.worker.output()  # retried in isolation, not in a batch again


def test_reconciling_twice_beside_a_late_redelivery_runs_a_job_once(
    stack: Callable[..., Stack],
) -> None:
    from service.core.broker import celery_publisher
    from workers.app import make_celery

    # Long enough that a reconcile on a busy machine ends well inside it: the second run
    # must find the message the first one just sent, not due again.
    s = stack(republish_after=3.0)
    tenant = s.tenant()
    job_id = tenant.submit("iris", [SETOSA])
    time.sleep(3.2)
    assert s.reconcile()["republished"] == 1
    assert s.reconcile()["republished"] == 0  # just sent: not due again yet
    celery = make_celery(s.settings)
    # and a late redelivery on top
    celery_publisher(celery)("predq.predict", "predict.normal", [job_id])
    celery.close()
    assert s.redis_queue_length("predict.normal") == 3  # the original and two more
    s.start_worker()
    job = tenant.wait(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    deadline = time.monotonic() + 20
    # Every copy taken and acknowledged, in one micro-batch or several:
    while s.redis_queue_length("predict.normal") or s.redis_unacked():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert tenant.get(f"/v1/jobs/{job_id}").json() == job  # the extra copies changed nothing
