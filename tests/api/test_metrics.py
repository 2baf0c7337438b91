"""GET /metrics: the Prometheus families, counted on real requests, jobs and workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from service.cli import embedded
from service.cli.processes import DEFAULT_QUEUES, api_command, stop_all, worker_command
from service.core.messaging import CHUNK_LANES
from service.core.settings import Settings
from service.models.registry import ModelInfo, add_model
from tests.faults.conftest import Stack, stack  # noqa: F401 - the fixture, shared
from tests.support.processes import ROOT, answers, free_port
from tests.support.tenants import Tenant, make_tenant

SETOSA = [5.1, 3.5, 1.4, 0.2]
FAMILIES = {  # counters without their _total, as the parser names the family
    "predq_jobs_submitted", "predq_jobs_finished", "predq_rejected_jobs",
    "predq_queue_depth_jobs", "predq_queue_oldest_job_age_seconds", "predq_batch_size_jobs",
    "predq_predict_duration_seconds", "predq_job_duration_seconds", "predq_http_requests",
    "predq_http_request_duration_seconds", "predq_webhook_attempts", "predq_cache_requests",
    "predq_rows_submitted", "predq_rows_finished",
}


@dataclass
class Scrape:
    families: set[str]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def scrape(base_url: str) -> Scrape:
    response = requests.get(base_url + "/metrics", timeout=10)  # no key: Prometheus sends none
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families, samples = set(), {}
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(families, samples)


@pytest.mark.usefixtures("worker")
def test_submissions_requests_and_queues_are_counted(api_url: str, tenant: Tenant) -> None:
    before = scrape(api_url)
    for _ in range(3):
        tenant.wait(tenant.submit("iris", [SETOSA]))
    answer = tenant.post("/v1/models/iris/predict?timeout=10", json={"inputs": [SETOSA]})
    assert answer.status_code == 200, answer.text
    after = scrape(api_url)

    assert after.families >= FAMILIES
    assert after.value("predq_jobs_submitted_total", model="iris", tenant=tenant.name) == 4
    grew = {}
    for method, route, status in (("POST", "/v1/jobs", "202"),
                                  ("GET", "/v1/jobs/<job_id>", "200"),
                                  ("POST", "/v1/models/<name>/predict", "200")):
        labels = {"method": method, "route": route, "status": status}
        grew[route] = (after.value("predq_http_requests_total", **labels)
                       - before.value("predq_http_requests_total", **labels))
        timed = (after.value("predq_http_request_duration_seconds_count", **labels)
                 - before.value("predq_http_request_duration_seconds_count", **labels))
        assert timed == grew[route], route
    assert grew["/v1/jobs"] == 3 and grew["/v1/models/<name>/predict"] == 1
    assert grew["/v1/jobs/<job_id>"] >= 3  # the polls: at least one per job
    for queue in ("predict.interactive", "predict.normal", "predict.bulk"):
        assert ("predq_queue_depth_jobs", frozenset({("queue", queue)})) in after.samples
        assert after.value("predq_queue_oldest_job_age_seconds", queue=queue) >= 0


@pytest.mark.usefixtures("worker")
def test_a_cache_hit_is_counted_and_its_job_finished_at_once(
    api_url: str, tenant: Tenant, engine: Engine, settings: Settings,
    models: dict[str, ModelInfo],
) -> None:
    name = f"cached-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        info = add_model(conn, settings.model_dir, models["iris"].artifact_path, name, "1",
                         cache_ttl=60)
    before = scrape(api_url)
    for call in range(2):  # a miss the worker answers, then a hit that needs no worker
        answer = tenant.post(f"/v1/models/{name}/predict?timeout=10", json={"inputs": [SETOSA]})
        assert answer.status_code == 200, answer.text
        if call == 0:  # the entry is written after the commit a caller may already have read
            cached = redis.Redis.from_url(settings.redis_url)
            deadline = time.monotonic() + 10
            while not any(cached.scan_iter(f"predq:cache:{info.id}:*")):
                assert time.monotonic() < deadline, "the first result was never cached"
                time.sleep(0.02)
            cached.close()
    after = scrape(api_url)
    for result in ("hit", "miss"):
        assert (after.value("predq_cache_requests_total", result=result)
                - before.value("predq_cache_requests_total", result=result)) == 1, result
    assert after.value("predq_jobs_submitted_total", model=name, tenant=tenant.name) == 2
    assert after.value("predq_jobs_finished_total", model=name, status="succeeded",
                       tenant=tenant.name) == 1  # the other one by the worker, another process


def test_a_full_queue_share_is_counted_as_rejected_and_as_a_429(
    stack: Callable[..., Stack],  # noqa: F811 - the fixture
) -> None:
    s = stack(max_depth_bulk=4, tenant_queue_share=0.25, depth_refresh_interval=0)  # no worker
    tenant = s.tenant()
    before = scrape(s.api.url)
    tenant.submit("iris", [SETOSA], priority="bulk")
    refused = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [SETOSA],
                                            "priority": "bulk"})
    assert refused.status_code == 429, refused.text
    after = scrape(s.api.url)
    rejected = {"queue": "predict.bulk", "reason": "tenant_share"}
    assert (after.value("predq_rejected_jobs_total", **rejected)
            - before.value("predq_rejected_jobs_total", **rejected)) == 1
    http_429 = {"method": "POST", "route": "/v1/jobs", "status": "429"}
    assert (after.value("predq_http_requests_total", **http_429)
            - before.value("predq_http_requests_total", **http_429)) == 1
    assert after.value("predq_queue_depth_jobs", queue="predict.bulk") >= 1


@pytest.fixture
def multiprocess_stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`predq api` (gunicorn, two processes) and a worker on a private Redis, sharing a fresh
    PROMETHEUS_MULTIPROC_DIR; yields the API's URL and the directory."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    redis_proc = embedded.start_redis(tmp_path / "redis")
    private = settings.replace(redis_url=f"unix://{tmp_path / 'redis' / 'redis.sock'}",
                               port=free_port(), api_workers=2, worker_concurrency=1,
                               metrics_dir=str(metrics_dir))
    env = {**os.environ, **private.env(), "PYTHONPATH": str(ROOT),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            for name in ("api", "worker")}
    try:
        worker = worker_command(private, ",".join((DEFAULT_QUEUES, *CHUNK_LANES)))  # both kinds
        for name, command in (("api", api_command(private)), ("worker", worker)):
            procs.append(subprocess.Popen([sys.executable, *command], env=env, cwd=ROOT,
                                          stdout=logs[name], stderr=subprocess.STDOUT,
                                          start_new_session=True))
        url = f"http://127.0.0.1:{private.port}"
        deadline = time.monotonic() + 60
        while not (answers(url) and b"ready." in (tmp_path / "worker.log").read_bytes()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                (tmp_path / "api.log").read_text() + (tmp_path / "worker.log").read_text()
            time.sleep(0.1)
        yield url, metrics_dir
    finally:
        stop_all(procs, grace=30)
        for log in logs.values():
            log.close()
        embedded.stop(redis_proc)
    assert "Traceback" not in (tmp_path / "api.log").read_text()  # child_exit hook included
    shutil.rmtree(metrics_dir)


def test_api_metrics_add_up_the_gunicorn_and_worker_processes(
    multiprocess_stack: tuple[str, Path], engine: Engine, models: dict[str, ModelInfo],
) -> None:
    url, metrics_dir = multiprocess_stack
    tenants = make_tenant(engine, url)
    tenant = next(tenants)
    try:
        for _ in range(3):
            tenant.wait(tenant.submit("iris", [SETOSA]))
        answer = tenant.post("/v1/models/iris/predict?timeout=10", json={"inputs": [SETOSA]})
        assert answer.status_code == 200, answer.text
        # A bulk job is a job like any other in the counters, and its rows count as rows.
        csv = "sepal_length,sepal_width,petal_length,petal_width\n" + "5.1,3.5,1.4,0.2\n" * 250
        bulk = tenant.post("/v1/jobs?model=iris", data=csv,
                           headers={"Content-Type": "text/csv"})
        assert bulk.status_code == 202, bulk.text
        assert tenant.wait(bulk.json()["id"])["status"] == "succeeded"
        after = scrape(url)
    finally:
        for _ in tenants:  # the tenant's cleanup
            pass
    # A family appears once some process has a sample of it (no cache, 429 or webhook here).
    untouched = {"predq_cache_requests", "predq_rejected_jobs", "predq_webhook_attempts"}
    assert after.families >= FAMILIES - untouched
    assert after.value("predq_jobs_submitted_total", model="iris", tenant=tenant.name) == 5
    assert after.value("predq_rows_submitted_total", model="iris", tenant=tenant.name) == 254
    # Written by the worker's pool process, read by whichever gunicorn process answered.
    assert after.value("predq_jobs_finished_total", model="iris", status="succeeded",
                       tenant=tenant.name) == 5
    assert after.value("predq_rows_finished_total", model="iris", status="succeeded",
                       tenant=tenant.name) == 254
    assert after.value("predq_batch_size_jobs_sum") == 4  # this worker saw only these jobs
    assert after.value("predq_batch_size_jobs_count") >= 1
    assert after.value("predq_predict_duration_seconds_count", model="iris") >= 1
    assert after.value("predq_job_duration_seconds_count", model="iris") == 5
    assert after.value("predq_http_requests_total", method="POST", route="/v1/jobs",
                       status="202") == 4  # both gunicorn processes' requests, added up
    assert list(metrics_dir.glob("*.db"))


def test_cancelled_and_expired_jobs_are_counted_as_finished(
    stack: Callable[..., Stack],  # noqa: F811 - the fixture imported above
) -> None:
    s = stack()  # no worker: jobs stay queued until cancelled or expired
    tenant = s.tenant()
    labels = {"model": "iris", "tenant": tenant.name}
    before = scrape(s.api.url)
    cancelled = tenant.submit("iris", [SETOSA])
    assert tenant.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200
    tenant.submit("iris", [SETOSA], deadline=0.2)
    time.sleep(0.4)
    assert s.reconcile()["expired"] == 1  # the reconciler runs in this process, like the API
    after = scrape(s.api.url)
    for status in ("cancelled", "expired"):
        name = "predq_jobs_finished_total"
        assert after.value(name, status=status, **labels) - \
            before.value(name, status=status, **labels) == 1, status
