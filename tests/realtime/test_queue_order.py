"""Priorities are queues read highest first; back-pressure refuses work before writing it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import redis
from sqlalchemy import Engine, func, select

from service.core.messaging import BULK, NORMAL
from service.jobs import admission, lifecycle
from service.jobs.admission import QueueFull, QueueGauge
from service.models.registry import ModelInfo
from service.store.db import jobs as jobs_table
from tests.realtime.conftest import SETOSA, Stack, until


def _started(tenant_get: Callable[[str], dict[str, object]], job_id: str) -> str:
    job = tenant_get(job_id)
    assert job["status"] == "succeeded", job
    return str(job["started_at"])


def test_an_interactive_job_overtakes_a_queue_full_of_bulk_jobs(
    stack: Callable[..., Stack],
) -> None:
    s = stack()  # no worker yet: the queues fill up
    tenant = s.tenant()
    bulk = [tenant.submit("iris", [SETOSA], priority="bulk") for _ in range(400)]
    urgent = tenant.submit("iris", [SETOSA], priority="interactive")  # last in
    s.start_worker()
    for job_id in [urgent, *bulk]:
        tenant.wait(job_id, timeout=60)

    def get(job_id: str) -> dict[str, object]:
        return tenant.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]

    urgent_start = _started(get, urgent)
    after = sum(_started(get, job_id) > urgent_start for job_id in bulk)
    print(f"\ninteractive job started before {after} of {len(bulk)} bulk jobs queued ahead of it")
    # At most the worker's first fetch (its prefetch window) can share a batch with it.
    assert after >= len(bulk) - 2 * 64


def test_a_full_queue_answers_429_with_retry_after_and_writes_nothing(
    stack: Callable[..., Stack], engine: Engine,
) -> None:
    s = stack(max_depth_bulk=3, tenant_queue_share=1.0, depth_refresh_interval=0)  # no worker
    tenant = s.tenant()
    for _ in range(3):
        tenant.submit("iris", [SETOSA], priority="bulk")
    response = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [SETOSA],
                                             "priority": "bulk"})
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "queue_full" and "predict.bulk" in error["message"]
    assert int(response.headers["Retry-After"]) == error["retry_after"] >= 1
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(jobs_table)
                             .where(jobs_table.c.tenant == tenant.name)).scalar()
    assert count == 3  # the refused job left no row behind
    # Other queues have their own limit.
    assert tenant.post("/v1/jobs", json={"model": "iris", "inputs": [SETOSA]}).status_code == 202
    # Synchronous predict is refused the same way when its queue is full.
    s2 = stack(max_depth_interactive=1, tenant_queue_share=1.0, depth_refresh_interval=0)
    t2 = s2.tenant()
    t2.submit("iris", [SETOSA], priority="interactive")
    refused = t2.post("/v1/models/iris/predict?timeout=1", json={"inputs": [SETOSA]})
    assert refused.status_code == 429 and "Retry-After" in refused.headers


def test_one_tenant_cannot_fill_more_than_its_share_of_a_queue(
    stack: Callable[..., Stack],
) -> None:
    s = stack(max_depth_normal=4, tenant_queue_share=0.5, depth_refresh_interval=0)
    greedy, polite = s.tenant(), s.tenant()
    for _ in range(2):
        greedy.submit("iris", [SETOSA])
    refused = greedy.post("/v1/jobs", json={"model": "iris", "inputs": [SETOSA]})
    assert refused.status_code == 429
    assert "share" in refused.json()["error"]["message"]
    for _ in range(2):
        polite.submit("iris", [SETOSA])  # the other tenant still gets its share


def test_retry_after_is_the_excess_divided_by_the_drain_rate(
    engine: Engine, settings: object, models: dict[str, ModelInfo], redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tenant = "t-drain-rate"
    client.delete(admission.DRAINED)
    gauge = QueueGauge(engine, client, {BULK: 50}, tenant_share=1.0, refresh=0)
    with engine.begin() as conn:
        lifecycle.insert_jobs(conn, [
            lifecycle.NewJob(tenant, models["iris"].id, np.array([SETOSA]), BULK).with_id()
            for _ in range(300)
        ])
    try:
        client.hset(admission.DRAINED, BULK, 0)
        gauge.stats()  # the first reading of the workers' counter
        time.sleep(1.0)
        client.hincrby(admission.DRAINED, BULK, 100)  # workers took 100 jobs in that second
        try:
            gauge.admit(BULK, tenant)
            raise AssertionError("admitted past the limit")
        except QueueFull as exc:
            rate = gauge.stats()[BULK].drain_per_second
            assert 60 < rate <= 100
            assert exc.retry_after == math.ceil((300 + 1 - 50) / rate) or 2 <= exc.retry_after <= 5
    finally:
        with engine.begin() as conn:
            conn.execute(jobs_table.delete().where(jobs_table.c.tenant == tenant))
        client.delete(admission.DRAINED)
        client.close()


def test_readyz_reports_queue_depth_oldest_age_and_live_workers(
    stack: Callable[..., Stack],
) -> None:
    s = stack()
    tenant = s.tenant()
    import requests

    tenant.submit("iris", [SETOSA])  # no worker yet: it waits in predict.normal
    time.sleep(0.3)
    body = requests.get(s.api.url + "/readyz", timeout=10).json()
    normal = body["queues"][NORMAL]
    assert normal["depth"] >= 1 and normal["oldest_age_seconds"] >= 0.3
    assert body["workers"] == 0
    s.start_worker()
    until(lambda: requests.get(s.api.url + "/readyz", timeout=10).json()["workers"] == 1,
          what="the worker's heartbeat")
    until(lambda: requests.get(s.api.url + "/readyz", timeout=10).json()
          ["queues"][NORMAL]["depth"] == 0, what="the queue to drain")
