"""The dashboard at `/` in a real headless Chromium, and the API endpoints it reads."""

from __future__ import annotations

import math
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import redis
import requests
from sqlalchemy import Engine, insert

from service.cli.processes import DEFAULT_QUEUES
from service.core.messaging import CHUNK_LANES, CHUNK_SHADOW_QUEUE
from service.core.settings import Settings
from service.core.times import utcnow
from service.jobs import lifecycle
from service.jobs.ending import Ending
from service.jobs.lifecycle import NewJob
from service.models.registry import ModelInfo
from service.ops import heartbeats
from service.store.db import webhook_attempts, webhook_events
from service.tenants import keys
from tests.support.browser import artifact, chromium, watched_page
from tests.support.processes import WorkerProcess
from tests.support.rollouts import (
    Versions,
    accepted,
    iris_rows,
    set_rollout,
    shadow_of,
)
from tests.support.tenants import Tenant, make_tenant

ROW: list[object] = [[5.1, 3.5, 1.4, 0.2]]


# --- the API the page reads ------------------------------------------------------------------


def test_recent_jobs_are_listed_newest_first_with_limit_and_status(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    ids = [tenant.submit("iris", ROW) for _ in range(3)]
    for job_id in ids:
        assert tenant.wait(job_id)["status"] == "succeeded"

    listed = tenant.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    newest = listed[0]
    assert newest["status"] == "succeeded" and newest["percent"] == 100.0
    # One presentation: the list shows each job exactly as GET /v1/jobs/{id} does.
    assert newest == tenant.get(f"/v1/jobs/{newest['id']}").json()
    assert (newest["model"], newest["version"], newest["rows"], newest["priority"]) == \
        ("iris", "1", 1, "normal")
    assert all(newest[k] for k in ("created_at", "started_at", "finished_at"))

    assert [j["id"] for j in tenant.get("/v1/jobs?limit=2").json()["jobs"]] == ids[:0:-1]
    assert len(tenant.get("/v1/jobs?status=succeeded").json()["jobs"]) == 3
    assert tenant.get("/v1/jobs?status=queued").json()["jobs"] == []


def test_a_queued_job_is_listed_with_no_progress(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    # Committed but never published: no worker hears of it, so it stays queued.
    new = NewJob(tenant.name, models["iris"].id, np.array(ROW)).with_id()
    with engine.begin() as conn:
        [job_id] = lifecycle.insert_jobs(conn, [new])
    listed = tenant.get("/v1/jobs?status=queued").json()["jobs"]
    assert [(j["id"], j["percent"], j["rows_done"], j["finished_at"]) for j in listed] == \
        [(job_id, 0.0, 0, None)]


def test_stats_count_the_finished_job_with_its_latency(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    job = tenant.wait(tenant.submit("iris", ROW))
    assert job["status"] == "succeeded"

    minutes = tenant.get("/v1/stats").json()["minutes"]
    assert len(minutes) == 15
    assert [m["minute"] for m in minutes] == sorted(m["minute"] for m in minutes)
    assert sum(m["finished"] for m in minutes) == sum(m["succeeded"] for m in minutes) == 1
    busy = next(m for m in minutes if m["finished"])
    assert 0 < busy["p50_ms"] == busy["p99_ms"] < 30_000
    assert all(m["p50_ms"] is None for m in minutes if not m["finished"])
    assert len(tenant.get("/v1/stats?minutes=60").json()["minutes"]) == 60


def test_webhook_failures_list_dead_and_retrying_events_only(
    tenant: Tenant, engine: Engine
) -> None:
    assert tenant.get("/v1/webhooks/failures").json() == {"events": []}
    now = utcnow()

    def event(status: str, attempts: int, error: str | None, age: int) -> dict[str, Any]:
        return {"id": f"msg_{uuid.uuid4().hex}", "tenant": tenant.name,
                "job_id": str(uuid.uuid4()), "endpoint_id": "we_test", "url": "https://example.com/hook",
                "type": "job.succeeded", "payload": "{}", "status": status,
                "attempts": attempts, "next_attempt_at": now + timedelta(seconds=60),
                "created_at": now - timedelta(seconds=age), "last_error": error}

    dead = event("dead", 8, "answered 500", age=20)
    retrying = event("pending", 1, "timed out", age=10)
    with engine.begin() as conn:
        conn.execute(insert(webhook_events), [
            dead, retrying, event("pending", 0, None, age=5), event("delivered", 1, None, age=1)])

    found = tenant.get("/v1/webhooks/failures").json()["events"]
    assert [(e["id"], e["status"], e["last_error"]) for e in found] == [
        (retrying["id"], "pending", "timed out"), (dead["id"], "dead", "answered 500")]
    assert found[0]["next_attempt_at"] and found[1]["next_attempt_at"] is None
    assert len(tenant.get("/v1/webhooks/failures?limit=1").json()["events"]) == 1


def test_jobs_are_filtered_by_model_priority_and_the_start_of_their_id(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    iris_normal = tenant.submit("iris", ROW)
    iris_fast = tenant.submit("iris", ROW, priority="interactive")
    fragile_bulk = tenant.submit("fragile", ROW, priority="bulk")
    for job_id in (iris_normal, iris_fast, fragile_bulk):
        assert tenant.wait(job_id)["status"] == "succeeded"

    def listed(query: str) -> list[str]:
        return [j["id"] for j in tenant.get(f"/v1/jobs?{query}").json()["jobs"]]

    assert listed("model=iris") == [iris_fast, iris_normal]
    assert listed("model=fragile") == [fragile_bulk]
    assert listed("model=diabetes") == []
    assert listed("priority=interactive") == [iris_fast]
    assert listed("priority=bulk") == [fragile_bulk]
    assert listed("priority=bulk&model=iris") == []
    assert listed("model=iris&status=succeeded&priority=normal") == [iris_normal]
    assert listed(f"id={iris_fast}") == [iris_fast]
    assert listed(f"id={iris_fast.upper()}") == [iris_fast]  # as pasted from anywhere
    assert iris_fast in listed(f"id={iris_fast[:6]}")
    assert listed(f"id={iris_fast[:8]}&model=fragile") == []
    assert listed("model=%E2%9C%93%13") == []  # any name the schema admits answers
    refused = tenant.get("/v1/jobs?model=iris%00")  # the one character it does not (documented)
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "model"
    assert "NUL" in refused.json()["error"]["message"]


def test_stats_count_rows_beside_jobs(worker: WorkerProcess, tenant: Tenant) -> None:
    small = [tenant.submit("iris", ROW * 3), tenant.submit("iris", ROW * 5)]
    failed = tenant.submit("fragile", [[5.1, -3.5, 1.4, 0.2]] * 2)  # 2 rows, tried and failed
    for job_id in small:
        assert tenant.wait(job_id)["status"] == "succeeded"
    assert tenant.wait(failed)["status"] == "failed"

    stats = tenant.get("/v1/stats").json()
    minutes = stats["minutes"]
    assert sum(m["finished"] for m in minutes) == 3
    assert sum(m["rows"] for m in minutes) == 10
    assert all(m["rows"] == 0 for m in minutes if not m["finished"])
    # Over the last sixty seconds: the three jobs, the ten rows.
    assert stats["jobs_per_second"] == round(3 / 60, 3)
    assert stats["rows_per_second"] == round(10 / 60, 3)


@pytest.fixture
def bulk_tenant(engine: Engine, settings: Settings, live_server: Any,
                models: dict[str, ModelInfo]) -> Iterator[Tenant]:
    """A tenant of an API that cuts bulk uploads into chunks of ten rows."""
    server = live_server(settings.replace(bulk_chunk_rows=10))
    yield from make_tenant(engine, server.url)


def test_a_bulk_job_counts_its_rows_chunk_by_chunk_and_once_as_a_job(
    worker: WorkerProcess, bulk_tenant: Tenant
) -> None:
    names = "sepal_length,sepal_width,petal_length,petal_width"
    body = "\n".join([names, *["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3"] * 12, "5.9,3.0,4.2,1.5"])
    response = bulk_tenant.post("/v1/jobs?model=iris", data=body.encode(),
                                headers={"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert bulk_tenant.wait(job_id)["status"] == "succeeded"

    stats = bulk_tenant.get("/v1/stats").json()
    assert sum(m["finished"] for m in stats["minutes"]) == 1
    assert sum(m["rows"] for m in stats["minutes"]) == 25
    assert stats["rows_per_second"] == round(25 / 60, 3)

    page = bulk_tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["chunks"] == {"total": 3, "pending": 0, "running": 0, "done": 3, "stopped": 0,
                              "attempts": 3}
    assert page["job"]["attempts"] == 1  # its most-claimed chunk's, not 0
    assert page["input"] == {"source": "upload", "format": "csv", "rows": 25, "columns": 4}
    assert page["preview"]["rows"] == 25
    assert len(page["preview"]["predictions"]) == 10  # the first chunk's, not all of it
    whole = bulk_tenant.get(f"/v1/jobs/{job_id}/result").json()
    assert page["preview"]["predictions"] == whole["predictions"][:10]


def test_a_finished_jobs_page_has_its_timeline_and_the_first_rows_of_its_result(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    job_id = tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * 6)
    assert tenant.wait(job_id)["status"] == "succeeded"

    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["job"] == tenant.get(f"/v1/jobs/{job_id}").json()
    steps = [(t["step"], t["at"]) for t in page["timeline"]]
    assert [step for step, _ in steps] == ["created", "published", "started", "finished"]
    times = [at for _, at in steps]
    assert all(times) and times == sorted(times)
    assert times[0] == page["job"]["created_at"] and times[3] == page["job"]["finished_at"]
    result = tenant.get(f"/v1/jobs/{job_id}/result").json()
    assert page["preview"] == {
        "rows": 12, "predictions": result["predictions"][:10],
        "probabilities": result["probabilities"][:10],
        "labels": ["setosa", "versicolor", "virginica"]}
    assert page["chunks"] is None and page["deliveries"] == []
    assert page["actions"] == {"cancel": False, "retry": True, "redeliver": False}


def test_a_failed_jobs_page_has_its_error_and_no_result(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    job_id = tenant.submit("fragile", [[5.1, -3.5, 1.4, 0.2]])
    assert tenant.wait(job_id)["status"] == "failed"
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["job"]["error"].startswith("prediction failed at inputs[0]: ValueError")
    assert page["job"]["percent"] == 0.0 and page["preview"] is None
    assert page["timeline"][3]["at"] == page["job"]["finished_at"]


def test_only_a_key_that_may_submit_is_offered_cancel(
    tenant: Tenant, engine: Engine, api_url: str, models: dict[str, ModelInfo]
) -> None:
    job_id = _queued_job(engine, tenant, models)
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["job"]["status"] == "queued"
    assert [t["step"] for t in page["timeline"] if t["at"] is None] == ["started", "finished"]
    assert page["actions"] == {"cancel": True, "retry": False, "redeliver": False}
    with engine.begin() as conn:
        reader_key = keys.create_key(conn, tenant.name, ("read",))
    reader = Tenant(tenant.name, reader_key, api_url)
    try:
        assert reader.get(f"/v1/jobs/{job_id}/overview").json()["actions"] == \
            {"cancel": False, "retry": False, "redeliver": False}
        assert reader.post(f"/v1/jobs/{job_id}/cancel").status_code == 403  # as it says
    finally:
        reader.http.close()


def test_a_job_that_sent_webhooks_offers_redelivery_with_its_attempts(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    job_id = _queued_job(engine, tenant, models)
    event_id = f"msg_{uuid.uuid4().hex}"
    now = utcnow()
    with engine.begin() as conn:
        Ending(conn).cancel(tenant.name, job_id)
        conn.execute(insert(webhook_events), {
            "id": event_id, "tenant": tenant.name, "job_id": job_id, "endpoint_id": "we_test",
            "url": "https://example.com/hook", "type": "job.cancelled", "payload": "{}",
            "status": "dead", "attempts": 1, "next_attempt_at": now, "created_at": now,
            "last_error": "answered 503"})
        conn.execute(insert(webhook_attempts), {
            "event_id": event_id, "attempted_at": now, "status_code": 503, "latency_ms": 12.5,
            "error": "answered 503"})
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["actions"] == {"cancel": False, "retry": True, "redeliver": True}
    [delivery] = page["deliveries"]
    assert (delivery["id"], delivery["status"]) == (event_id, "dead")
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == \
        [(503, "answered 503")]


def test_another_tenants_job_page_answers_like_a_missing_job(
    worker: WorkerProcess, tenant: Tenant, other_tenant: Tenant
) -> None:
    job_id = tenant.wait(tenant.submit("iris", ROW))["id"]
    theirs = other_tenant.get(f"/v1/jobs/{job_id}/overview")
    missing = other_tenant.get(f"/v1/jobs/{uuid.uuid4()}/overview")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "job_not_found"
    assert other_tenant.get(f"/v1/jobs?id={job_id}").json() == {"jobs": [], "next": None}
    assert other_tenant.get(f"/v1/jobs/{job_id}%00/overview").status_code == 404


def test_workers_show_their_queues_heartbeat_and_the_rows_they_finished(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    name = f"{socket.gethostname()}:{worker.proc.pid}"

    def mine() -> dict[str, Any]:
        listed = tenant.get("/v1/workers").json()
        return next(w for w in listed["workers"] if w["name"] == name)

    before = _eventually(mine)
    assert before["queues"] == sorted([*DEFAULT_QUEUES.split(","), *CHUNK_LANES,  # the tests'
                                       CHUNK_SHADOW_QUEUE])
    assert before["role"] == "predict"  # worker takes single jobs and bulk chunks alike
    assert (before["pid"], before["concurrency"], before["stale"]) == (worker.proc.pid, 2, False)
    assert before["heartbeat_age_seconds"] < 15 and before["node"].startswith("celery@")

    job_id = tenant.submit("iris", ROW * 7)
    assert tenant.wait(job_id)["status"] == "succeeded"
    after = mine()
    assert (after["jobs_total"] - before["jobs_total"], after["rows_total"] -
            before["rows_total"]) == (1, 7)
    assert after["rows_per_second"] > 0 and after["jobs_per_second"] > 0
    assert job_id not in tenant.get("/v1/workers").text  # shared: names no tenant's job


def test_a_worker_that_stopped_beating_is_listed_as_stale(
    settings: Settings, tenant: Tenant
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    gone = heartbeats.Identity("gone-host", 4242, "celery@gone-host", ("predict.bulk",), 8)
    try:
        heartbeats.heartbeat(client, gone.name, gone)
        heartbeats.Tally(client, gone.name).add(3, 300)
        client.zadd(heartbeats.WORKERS, {gone.name: time.time() - 120})  # two minutes silent
        listed = tenant.get("/v1/workers").json()
        assert listed["stale_after_seconds"] == heartbeats.WORKER_TTL
        [stale] = [w for w in listed["workers"] if w["name"] == gone.name]
        assert (stale["stale"], stale["queues"], stale["rows_total"], stale["rows_per_second"]) \
            == (True, ["predict.bulk"], 300, 0.0)
        assert stale["heartbeat_age_seconds"] >= 120
        assert listed["workers"][-1]["name"] == gone.name  # live ones first
        assert heartbeats.live_workers(client) == sum(not w["stale"] for w in listed["workers"])
    finally:
        heartbeats.forget(client, gone.name)
        client.close()


def _queued_job(engine: Engine, tenant: Tenant, models: dict[str, ModelInfo]) -> str:
    """A job committed but never published: no worker hears of it, so it stays queued."""
    new = NewJob(tenant.name, models["iris"].id, np.array(ROW)).with_id()
    with engine.begin() as conn:
        [job_id] = lifecycle.insert_jobs(conn, [new])
    return job_id


def _eventually(read: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except StopIteration:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/jobs?limit=ten", "limit"),
    ("/v1/jobs?limit=0", "limit"),
    ("/v1/jobs?limit=501", "limit"),
    ("/v1/jobs?limit=", "limit"),
    ("/v1/jobs?status=done", "status"),
    ("/v1/stats?minutes=0", "minutes"),
    ("/v1/stats?minutes=61", "minutes"),
    ("/v1/stats?minutes=1.5", "minutes"),
    ("/v1/webhooks/failures?limit=-1", "limit"),
    ("/v1/jobs?model=", "model"),
    ("/v1/jobs?model=" + "m" * 101, "model"),
    ("/v1/jobs?priority=urgent", "priority"),
    ("/v1/jobs?priority=9", "priority"),
    ("/v1/jobs?id=", "id"),
    ("/v1/jobs?id=not-an-id", "id"),
    ("/v1/jobs?id=" + "a" * 37, "id"),
    ("/v1/jobs?id=abc%25", "id"),
])
def test_a_bad_parameter_answers_400_naming_it(tenant: Tenant, path: str, field: str) -> None:
    response = tenant.get(path)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field)
    assert error["message"].startswith(f"{field}: ")


def test_another_tenant_sees_none_of_the_jobs(
    worker: WorkerProcess, tenant: Tenant, other_tenant: Tenant
) -> None:
    tenant.wait(tenant.submit("iris", ROW))
    assert other_tenant.get("/v1/jobs").json() == {"jobs": [], "next": None}
    minutes = other_tenant.get("/v1/stats").json()["minutes"]
    assert sum(m["finished"] for m in minutes) == 0
    assert other_tenant.get("/v1/webhooks/failures").json() == {"events": []}


def test_the_endpoints_need_a_key_and_the_page_does_not(api_url: str, tenant: Tenant) -> None:
    for path in ("/v1/jobs", "/v1/stats", "/v1/webhooks/failures", "/v1/workers",
                 "/v1/webhooks/failures/groups", "/v1/queues/history",
                 f"/v1/jobs/{uuid.uuid4()}/overview"):
        assert requests.get(api_url + path, timeout=10).status_code == 401
    page = requests.get(api_url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/static/dashboard.js" in page.text
    script = requests.get(api_url + "/static/dashboard.js", timeout=10)
    assert script.status_code == 200 and "./dashboard/core.js" in script.text  # its modules
    core = requests.get(api_url + "/static/dashboard/core.js", timeout=10)
    assert core.status_code == 200 and "Authorization" in core.text
    assert core.headers["Content-Type"].split(";")[0] in ("text/javascript",
                                                          "application/javascript")


# --- the page in Chromium --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_dashboard_shows_a_job_submitted_during_the_test(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str, engine: Engine
) -> None:
    url = "https://hooks.example.com/predq/" + "very-long-path-segment/" * 6 + "receive"
    with engine.begin() as conn:  # a dead webhook event, for the failures table
        conn.execute(insert(webhook_events), {
            "id": f"msg_{uuid.uuid4().hex}", "tenant": tenant.name, "job_id": str(uuid.uuid4()),
            "endpoint_id": "we_test", "url": url, "type": "job.succeeded", "payload": "{}",
            "status": "dead", "attempts": 8, "next_attempt_at": utcnow(),
            "created_at": utcnow(), "last_error": "answered 500 Internal Server Error"})
    with watched_page(browser, 1280, 720) as (page, console):
        page.goto(f"{api_url}/#key={tenant.key}")
        page.wait_for_selector("#board", state="visible")
        page.wait_for_selector("#jobs td.empty")  # the first refresh ran: no jobs yet
        assert "key=" not in page.url  # taken off the address bar once stored

        job_id = tenant.submit("iris", ROW)
        row = page.locator(f'#jobs tr[data-job-id="{job_id}"][data-status="succeeded"]')
        row.wait_for(timeout=30_000)
        assert "iris 1" in row.inner_text()
        page.wait_for_selector("#latency circle.dot50", timeout=15_000)  # the plot has it too
        page.wait_for_selector("#models td:text-is('diabetes')")
        assert page.locator("#queues tbody tr").count() == 3
        assert page.inner_text("#ready") == "ready"
        # The URL column is readable: one line, wide enough, the whole URL in its title.
        cell = page.locator("#failures td.url").first
        cell.wait_for(timeout=15_000)
        box = cell.bounding_box()
        assert box is not None and box["width"] >= 150 and box["height"] < 60, box
        assert cell.get_attribute("title") == url

        page.screenshot(path=str(artifact("dashboard.png")), full_page=True)
        assert console.errors == []


def test_dashboard_asks_again_for_a_refused_key(
    browser: Any, tenant: Tenant, api_url: str
) -> None:
    with watched_page(browser, 1280, 720) as (page, console):
        page.goto(f"{api_url}/#key=pq_not_a_key")
        page.wait_for_selector("#login-message.error", state="visible")
        assert page.is_hidden("#board")

        page.fill("#key", tenant.key)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#models td:text-is('iris')")
        # Chromium logs the 401 itself; the page threw nothing.
        assert [e for e in console.errors if "401" not in e] == []


def _open(page: Any, api_url: str, key: str) -> None:
    page.goto(f"{api_url}/#key={key}")
    page.locator("#board:visible, #key-offer:visible").first.wait_for()
    if page.is_visible("#key-offer"):  # another key is held: the page asks first
        page.click("#key-offer-use")
    page.wait_for_selector("#board", state="visible")


def test_the_job_page_of_a_finished_and_of_a_failed_job(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str
) -> None:
    ok = tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * 6)
    bad = tenant.submit("fragile", [[5.1, -3.5, 1.4, 0.2]])
    assert tenant.wait(ok)["status"] == "succeeded" and tenant.wait(bad)["status"] == "failed"
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        # A failed job's bar is red and empty, never a full green bar.
        bar = page.locator(f'#jobs tr[data-job-id="{bad}"] .bar')
        bar.wait_for()
        assert "bar-failed" in (bar.get_attribute("class") or "")
        assert bar.evaluate("b => getComputedStyle(b.firstChild).width") == "0px"

        page.click(f'#jobs tr[data-job-id="{ok}"] td:nth-child(2)')  # anywhere on the row
        page.wait_for_selector('#job-page[data-status="succeeded"]')
        assert page.url.endswith(f"#/jobs/{ok}") and page.is_hidden("#board")
        assert page.inner_text("#job-id") == ok
        assert page.locator("#job-timeline li.reached").count() == 4
        assert page.locator("#job-preview tbody tr").count() == 10
        assert "first 10 of 12 rows" in page.inner_text("#job-preview-note")
        assert page.inner_text("#job-preview tbody tr >> nth=0").split("\t")[1] == "setosa"
        assert page.is_hidden("#job-cancel") and page.is_hidden("#job-error")
        page.screenshot(path=str(artifact("job-succeeded.png")), full_page=True)

        page.goto(f"{api_url}/#/jobs/{bad}")  # by address, as a shared link
        page.wait_for_selector('#job-page[data-status="failed"]')
        assert page.inner_text("#job-error").startswith(
            "prediction failed at inputs[0]: ValueError")
        assert "no result: the job failed" in page.inner_text("#job-preview")
        page.screenshot(path=str(artifact("job-failed.png")), full_page=True)
        page.click("text=← all jobs")
        page.wait_for_selector("#board", state="visible")
        assert console.errors == []


def test_cancel_on_the_job_page_cancels_the_job_and_needs_the_submit_scope(
    browser: Any, tenant: Tenant, engine: Engine, api_url: str, models: dict[str, ModelInfo]
) -> None:
    job_id = _queued_job(engine, tenant, models)
    with engine.begin() as conn:
        reader_key = keys.create_key(conn, tenant.name, ("read",))
    with watched_page(browser) as (page, console):
        _open(page, api_url, reader_key)
        page.goto(f"{api_url}/#/jobs/{job_id}")
        page.wait_for_selector('#job-page[data-status="queued"]')
        assert page.is_hidden("#job-cancel")  # a read-only key is not offered it

        _open(page, api_url, tenant.key)
        page.goto(f"{api_url}/#/jobs/{job_id}")
        page.wait_for_selector('#job-page[data-status="queued"]')
        page.click("#job-cancel")
        page.click("#job-cancel-yes")  # asked first
        page.wait_for_selector('#job-page[data-status="cancelled"]')
        assert "cancelled" in page.inner_text("#job-message")
        assert page.is_hidden("#job-cancel")
        assert tenant.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        page.screenshot(path=str(artifact("job-cancelled.png")), full_page=True)
        assert console.errors == []


def _iris_and_a_bulk_fragile(tenant: Tenant) -> tuple[str, str]:
    """Two finished jobs the board's filters tell apart (model and priority)."""
    iris = tenant.submit("iris", ROW)
    fragile = tenant.submit("fragile", ROW, priority="bulk")
    for job_id in (iris, fragile):
        assert tenant.wait(job_id)["status"] == "succeeded"
    return iris, fragile


def _listed(page: Any) -> list[str]:
    """The job ids the board lists, top to bottom."""
    return page.eval_on_selector_all("#jobs tbody tr[data-job-id]",
                                     "rows => rows.map(r => r.dataset.jobId)")


def test_the_board_lists_the_worker_and_filters_and_searches_jobs(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str
) -> None:
    iris, fragile = _iris_and_a_bulk_fragile(tenant)
    from playwright.sync_api import expect


    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        name = f"{socket.gethostname()}:{worker.proc.pid}"
        row = page.locator(f'#worker-list tr[data-worker="{name}"][data-stale="false"]')
        row.wait_for()
        assert "interactive" in row.inner_text() and "live" in row.inner_text()
        page.wait_for_selector(f'#jobs tr[data-job-id="{iris}"]')
        assert _listed(page) == [fragile, iris]

        page.wait_for_selector("#job-model option[value=fragile]", state="attached")
        page.select_option("#job-model", "fragile")
        # (Polled from here: the page's CSP refuses Playwright's string predicates, rightly.)
        rows = page.locator("#jobs tbody tr[data-job-id]")
        expect(rows).to_have_count(1)
        assert _listed(page) == [fragile] and "model=fragile" in page.url
        page.select_option("#job-model", "")
        page.select_option("#job-priority", "normal")
        expect(page.locator(f'#jobs tr[data-job-id="{fragile}"]')).to_have_count(0)
        assert _listed(page) == [iris]
        page.select_option("#job-priority", "")

        page.fill("#job-search", fragile[:8])
        expect(page.locator(f'#jobs tr[data-job-id="{iris}"]')).to_have_count(0)
        assert _listed(page) == [fragile]
        page.reload()  # the filters are in the address: a reload (or a shared link) keeps them
        page.wait_for_selector(f'#jobs tr[data-job-id="{fragile}"]')
        assert _listed(page) == [fragile] and page.input_value("#job-search") == fragile[:8]
        page.screenshot(path=str(artifact("dashboard-search.png")), full_page=True)

        page.fill("#job-search", "not an id")  # refused here, not sent to get a 400
        page.wait_for_selector("#job-search-note:text('hex digits')")
        assert _listed(page) == []
        assert console.errors == []


def test_an_answer_for_an_older_filter_does_not_overwrite_a_newer_one(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str
) -> None:
    iris, fragile = _iris_and_a_bulk_fragile(tenant)
    from playwright.sync_api import expect

    held: list[Any] = []

    def hold_unfiltered(route: Any) -> None:
        # The list without a priority filter is held back until the filtered one has been drawn.
        if "priority=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    with watched_page(browser) as (page, console):
        try:
            _open(page, api_url, tenant.key)
            page.wait_for_selector(f'#jobs tr[data-job-id="{fragile}"]')
            page.route("**/v1/jobs?*", hold_unfiltered)
            page.select_option("#job-status", "succeeded")  # round 1: held
            deadline = time.monotonic() + 10
            while not held:  # (the route's handler runs while Playwright is waited on)
                assert time.monotonic() < deadline, "the page never asked for the list"
                page.wait_for_timeout(50)
            page.select_option("#job-priority", "normal")  # round 2: answered
            expect(page.locator(f'#jobs tr[data-job-id="{fragile}"]')).to_have_count(0)
            assert _listed(page) == [iris]
            for route in held:  # round 1's answer arrives last ...
                sent = route.request
                with page.expect_response(lambda r, sent=sent: r.request == sent) as answer:
                    route.continue_()
                answer.value.finished()
            page.evaluate("() => new Promise((done) => setTimeout(done, 300))")
            assert _listed(page) == [iris]  # ... and is not drawn over round 2's
            assert console.errors == []
        finally:
            page.unroute("**/v1/jobs?*")


def test_the_latency_axis_names_the_values_its_lines_stand_for(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str, engine: Engine
) -> None:
    # A slow job (about 400 ms) and fast ones: p99 and p50 far apart.
    ids = [tenant.submit("sleepy", [[400.0, 0.0]]), *(tenant.submit("iris", ROW) for _ in range(3))]
    for job_id in ids:
        assert tenant.wait(job_id)["status"] == "succeeded"
    url = "https://hooks.example.com/" + "x" * 120
    with engine.begin() as conn:  # a failure whose error cannot break between words
        conn.execute(insert(webhook_events), {
            "id": f"msg_{uuid.uuid4().hex}", "tenant": tenant.name, "job_id": ids[0],
            "endpoint_id": "we_test", "url": url, "type": "job.succeeded", "payload": "{}",
            "status": "dead", "attempts": 8, "next_attempt_at": utcnow(), "created_at": utcnow(),
            "last_error": "could-not-connect-" * 12})
    with watched_page(browser, 1000, 900) as (page, console):
        _open(page, api_url, tenant.key)
        page.wait_for_selector("#latency circle.dot99")
        p99 = max(m["p99_ms"] or 0 for m in tenant.get("/v1/stats").json()["minutes"])
        labels = page.eval_on_selector_all("#latency text.y-label", """labels => labels.map(
            l => [Number(l.dataset.value), l.textContent, Number(l.getAttribute('y')) - 3])""")
        values = [v for v, _, _ in labels]
        step = values[1]
        assert values == [step * i for i in range(len(values))] and 2 <= len(values) <= 5
        assert step / 10 ** math.floor(math.log10(step)) in (1, 2, 5)  # a round step
        assert values[-2] < p99 <= values[-1]  # the scale ends at the first line above the data
        for value, text, _ in labels:  # the labels say those values, in ms or s
            number, unit = text.split(" ")
            assert float(number) * (1000 if unit == "s" else 1) == pytest.approx(value), text
        # Each dot sits where the lines say its value is.
        (v0, _, y0), (v1, _, y1) = labels[0], labels[-1]
        for value, cy in page.eval_on_selector_all(
                "#latency circle", "dots => dots.map(d => [Number(d.dataset.value), "
                "Number(d.getAttribute('cy'))])"):
            assert cy == pytest.approx(y0 + (value - v0) * (y1 - y0) / (v1 - v0), abs=0.5)

        # The webhook failures' URL column stays one readable line beside a long error.
        cell = page.locator(f'#failures td.url[title="{url}"]')
        cell.wait_for()
        lines = cell.evaluate("td => { const r = document.createRange(); r.selectNodeContents(td);"
                              " return new Set([...r.getClientRects()].map(b => b.top)).size; }")
        box = cell.bounding_box()
        assert lines == 1 and box is not None and box["width"] >= 120, (lines, box)
        # ... and the table fits its panel: no column pushed out of sight, no tall rows.
        row = page.locator(f'#failures tr:has(td.url[title="{url}"])').bounding_box()
        assert row is not None and row["height"] < 80, row
        assert page.eval_on_selector("#failures-section",
                                     "s => s.scrollWidth <= s.clientWidth")
        page.screenshot(path=str(artifact("dashboard-narrow.png")), full_page=True)
        assert console.errors == []




def test_the_models_view_compares_a_shadowed_rollout_for_an_operator_key(
    browser: Any, worker: WorkerProcess, tenant: Tenant, ops: Tenant, versions: Versions,
    api_url: str
) -> None:
    set_rollout(ops, versions.name, {"weights": {"1": 100},
                                     "shadow": {"version": "2", "percent": 100}})
    try:
        sent = {}
        for seed in range(12):
            rows = iris_rows(2 + seed % 3, 40 + seed)
            sent[accepted(tenant, {"model": versions.name, "inputs": rows})["id"]] = rows
        for job_id in sent:
            assert tenant.wait(job_id)["status"] == "succeeded"
            assert shadow_of(ops, job_id)["version"] == "2"
        rows = [row for batch in sent.values() for row in batch]
        same = sum(a == b for a, b in zip(versions.predict("1", rows), versions.predict("2", rows),
                                          strict=True))
        with watched_page(browser, 1280, 1000) as (page, console):
            _open(page, api_url, ops.key)
            block = page.locator(f'#comparisons .comparison[data-model="{versions.name}"]')
            block.wait_for(timeout=15_000)
            assert block.locator("h3").inner_text() == f"{versions.name}: 2 against 1"
            shown = block.locator(".agreement")
            assert shown.inner_text() == f"{same / len(rows) * 100:.1f}%"
            assert float(shown.get_attribute("data-value") or "nan") == \
                pytest.approx(same / len(rows))
            summary = block.locator(".compare-summary").inner_text()
            assert f"{len(rows)} rows of {len(sent)} jobs" in summary
            versions_shown = block.locator("table.compare-versions tbody tr")
            assert versions_shown.count() == 2
            baseline, candidate = (versions_shown.nth(i).inner_text().split("\t")
                                   for i in (0, 1))
            assert baseline[:4] == ["1", "baseline", str(len(sent)), "0"]
            assert candidate[:4] == ["2", "candidate", str(len(sent)), "0"]
            assert all(cell.endswith("ms") or cell.endswith(" s") for cell in candidate[4:])
            confusion = block.locator("table.confusion tbody td")
            assert sum(int(n) for n in confusion.all_inner_texts()) == len(rows)
            page.screenshot(path=str(artifact("dashboard-rollout-compare.png")), full_page=True)
            assert console.errors == []

            # A key without the operator scope: compare answers it 403, the page says so once.
            _open(page, api_url, tenant.key)
            page.wait_for_selector("#comparisons p.note:text('operator scope')")
            assert page.locator("#comparisons .comparison").count() == 0
            assert [e for e in console.errors if "403" not in e] == []
    finally:
        assert ops.delete(f"/v1/models/{versions.name}/rollout").status_code == 200
