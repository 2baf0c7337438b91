"""A job's end has one home: every path that ends a job goes through `service/jobs/ending.py`
and emits exactly one webhook event per final state and one wake-up for waiting callers.

The first test reads the code: no other module writes a final status or calls the effects
of an end. The others drive each path on a private stack (its own Redis, API and worker) and
count what the end left behind.
"""

from __future__ import annotations

import ast
import io
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import numpy as np
import pytest
import redis
from sqlalchemy import Engine, select, update

from service.core.broker import celery_publisher
from service.core.messaging import NORMAL, PREDICT_TASK
from service.core.settings import Settings
from service.core.times import utcnow
from service.jobs import lifecycle
from service.jobs.ending import exhausted_error
from service.jobs.lifecycle import NewJob
from service.jobs.wakeups import DONE_CHANNEL
from service.models.registry import ModelInfo, add_model
from service.store.db import job_chunks, jobs, webhook_events
from tests.faults.conftest import Stack
from tests.realtime.conftest import SETOSA, occupy, until
from tests.support.processes import ROOT
from tests.support.tenants import Tenant
from workers.app import make_celery

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"}
HOME = {"service/jobs/ending.py", "service/jobs/aftercommit.py"}
#: The effects of a job's end: called from its home only.
EFFECTS = {("webhook_events", "record"), ("events", "record"), ("wakeups", "after_batch"),
           ("wakeups", "announce_done"), ("metrics", "job_ended")}


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for folder in ("service", "workers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            yield name, ast.parse(path.read_text(), name)


def test_no_module_but_the_home_writes_a_final_status_or_an_end_effect() -> None:
    offenders = []
    for name, tree in _sources():
        if name in HOME:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            func = node.func
            if isinstance(func.value, ast.Name) and (func.value.id, func.attr) in EFFECTS:
                offenders.append(f"{name}:{node.lineno} calls {func.value.id}.{func.attr}")
            if func.attr == "values" and any(  # UPDATE ... SET status = <a final state>
                    isinstance(n, ast.Attribute) and n.attr in FINAL
                    and isinstance(n.value, ast.Name) and n.value.id == "JobStatus"
                    for n in ast.walk(node)):
                offenders.append(f"{name}:{node.lineno} sets a final status")
    assert offenders == []


class Doorbell:
    """Every job id announced on the wake-up channel of a stack's Redis."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(DONE_CHANNEL)
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                self.seen.update(message["data"].decode().split())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def ends(stack: Callable[..., Stack]) -> Iterator[tuple[Stack, Tenant, Doorbell]]:
    """A stack with short leases, a tenant with a webhook endpoint for every event, and the
    wake-up channel watched."""
    s = stack(webhook_allow_hosts="127.0.0.1:9", lease_seconds=3, max_attempts=3,
              bulk_chunk_rows=50)
    tenant = s.tenant()
    made = tenant.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/ends"})
    assert made.status_code == 201, made.text
    bell = Doorbell(s.settings.redis_url)
    yield s, tenant, bell
    bell.close()


def _events(engine: Engine, job_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(webhook_events.c.type)
                                 .where(webhook_events.c.job_id == job_id)).scalars())


def _ended_once(s: Stack, bell: Doorbell, job_id: str, status: str) -> None:
    """The job is `status`, with one webhook event of that type and one wake-up."""
    until(lambda: bell.seen[job_id] >= 1, what=f"the wake-up of {job_id}")
    with s.engine.connect() as conn:
        assert conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar() == status
    assert _events(s.engine, job_id) == [f"job.{status}"]
    time.sleep(0.3)  # a second announcement, if any, would have come by now
    assert bell.seen[job_id] == 1


def test_single_jobs_that_succeed_fail_expire_or_are_cancelled_end_once(
    ends: tuple[Stack, Tenant, Doorbell],
) -> None:
    s, tenant, bell = ends
    queued = tenant.submit("iris", [SETOSA])  # no worker yet: cancelled while queued
    assert tenant.delete(f"/v1/jobs/{queued}").status_code == 200
    late = tenant.submit("iris", [SETOSA], deadline=0.2)
    time.sleep(0.3)
    assert s.reconcile()["expired"] >= 1  # the reconciler expires it
    s.start_worker()
    busy = occupy(s, tenant, 1500)
    at_claim = tenant.submit("iris", [SETOSA], deadline=0.3)  # expires when it is claimed
    ok = tenant.submit("iris", [SETOSA])
    bad = tenant.submit("fragile", [[-1.0, 1.0, 1.0, 1.0]])
    running = tenant.submit("sleepy", [[3000, 0]], priority="interactive")
    until(lambda: tenant.get(f"/v1/jobs/{running}").json()["status"] == "running",
          what="the sleepy job to run")
    assert tenant.delete(f"/v1/jobs/{running}").status_code == 200
    for job_id, status in [(queued, "cancelled"), (late, "expired"), (at_claim, "expired"),
                           (ok, "succeeded"), (bad, "failed"), (running, "cancelled"),
                           *((b, "succeeded") for b in busy)]:
        _ended_once(s, bell, job_id, status)


def test_a_job_whose_worker_died_too_often_ends_once_in_a_batch_or_the_reconciler(
    ends: tuple[Stack, Tenant, Doorbell], models: dict[str, ModelInfo],
) -> None:
    s, tenant, bell = ends
    by_batch = tenant.submit("iris", [SETOSA])
    swept = NewJob(tenant.name, models["iris"].id, np.array([SETOSA])).with_id()
    by_sweep = swept.id  # no message: only the reconciler can meet it
    with s.engine.begin() as conn:  # as if three workers had died holding each
        lifecycle.insert_jobs(conn, [swept])
        conn.execute(update(jobs).where(jobs.c.id.in_([by_batch, by_sweep])).values(
            status="running", attempts=3, lease_until=utcnow() - timedelta(seconds=60)))
    s.start_worker()  # a message for `by_batch` arrives: its batch fails it ...
    celery = make_celery(s.settings)
    celery_publisher(celery)(PREDICT_TASK, NORMAL, [by_batch])
    celery.close()
    until(lambda: bell.seen[by_batch] >= 1, what="the batch to fail it")
    assert s.reconcile()["failed"] >= 1  # ... and the reconciler the other
    for job_id in (by_batch, by_sweep):
        _ended_once(s, bell, job_id, "failed")
        assert tenant.get(f"/v1/jobs/{job_id}").json()["error"] == exhausted_error(3)


def test_bulk_jobs_that_succeed_fail_or_are_cancelled_end_once(
    ends: tuple[Stack, Tenant, Doorbell],
) -> None:
    s, tenant, bell = ends
    s.start_worker()
    rows = np.tile(SETOSA, (250, 1))
    ok = _upload(tenant, "iris", rows)
    broken = rows.copy()
    broken[240, 0] = -1.0  # the fragile model cannot take it: its chunk fails the job
    failed = _upload(tenant, "fragile", broken)
    slow = _upload(tenant, "sleepy", np.tile([300.0, 0.0], (500, 1)))  # ten chunks of 0.3 s
    until(lambda: tenant.get(f"/v1/jobs/{slow}").json()["rows_done"] > 0, what="a chunk")
    assert tenant.delete(f"/v1/jobs/{slow}").status_code == 200
    for job_id, status in [(ok, "succeeded"), (failed, "failed"), (slow, "cancelled")]:
        _ended_once(s, bell, job_id, status)
    assert "chunk 4" in str(tenant.get(f"/v1/jobs/{failed}").json()["error"])


def test_a_bulk_job_whose_chunk_killed_its_worker_too_often_ends_once(
    ends: tuple[Stack, Tenant, Doorbell],
) -> None:
    s, tenant, bell = ends
    job_id = _upload(tenant, "iris", np.tile(SETOSA, (30, 1)))
    with s.engine.begin() as conn:  # no worker: its chunk "ran" three times and died
        conn.execute(update(job_chunks).where(job_chunks.c.job_id == job_id).values(
            status="running", attempts=3, lease_until=utcnow() - timedelta(seconds=60),
            published_at=utcnow()))
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(status="running"))
    s.reconcile()
    _ended_once(s, bell, job_id, "failed")
    assert tenant.get(f"/v1/jobs/{job_id}").json()["error"] == exhausted_error(3)


def test_a_job_answered_from_the_cache_ends_once_too(
    ends: tuple[Stack, Tenant, Doorbell], engine: Engine, settings: Settings,
    models: dict[str, ModelInfo],
) -> None:
    s, tenant, bell = ends
    name = f"cached-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        add_model(conn, settings.model_dir, models["iris"].artifact_path, name, "1",
                  cache_ttl=60)
    s.start_worker()
    first = tenant.submit(name, [SETOSA])
    _ended_once(s, bell, first, "succeeded")
    hit = tenant.post("/v1/jobs", json={"model": name, "inputs": [SETOSA]}).json()
    assert hit["status"] == "succeeded"  # from the cache, at once: its webhook all the same
    assert _events(s.engine, hit["id"]) == ["job.succeeded"]


def _upload(tenant: Tenant, model: str, rows: np.ndarray) -> str:
    body = io.BytesIO()
    np.save(body, rows)
    response = tenant.post(f"/v1/jobs?model={model}", data=body.getvalue(),
                           headers={"Content-Type": "application/x-npy"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])
