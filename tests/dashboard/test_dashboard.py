"""The dashboard at `/` in a real headless Chromium, and the API endpoints it reads."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sqlalchemy import Engine, insert

from service.core.times import utcnow
from service.jobs import lifecycle as jobs
from service.jobs.lifecycle import NewJob
from service.models.registry import ModelInfo
from service.store.db import webhook_events
from tests.support.processes import ROOT, WorkerProcess
from tests.support.tenants import Tenant

CHROMIUM = "/usr/bin/chromium"
ROW: list[object] = [[5.1, 3.5, 1.4, 0.2]]


def artifact(name: str) -> Path:
    """Where a test leaves files for a human to look at: PREDQ_TEST_ARTIFACTS, or test-artifacts/
    (ignored by git) at the repository root."""
    directory = Path(os.environ.get("PREDQ_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


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
        [job_id] = jobs.insert_jobs(conn, [new])
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
    assert other_tenant.get("/v1/jobs").json() == {"jobs": []}
    minutes = other_tenant.get("/v1/stats").json()["minutes"]
    assert sum(m["finished"] for m in minutes) == 0
    assert other_tenant.get("/v1/webhooks/failures").json() == {"events": []}


def test_the_endpoints_need_a_key_and_the_page_does_not(api_url: str, tenant: Tenant) -> None:
    for path in ("/v1/jobs", "/v1/stats", "/v1/webhooks/failures"):
        assert requests.get(api_url + path, timeout=10).status_code == 401
    page = requests.get(api_url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/static/dashboard.js" in page.text
    script = requests.get(api_url + "/static/dashboard.js", timeout=10)
    assert script.status_code == 200 and "Authorization" in script.text


# --- the page in Chromium --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a browser `playwright install` fetched)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


class Console:
    """Every console error and uncaught exception of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error"
                else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))


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
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    console = Console(page)
    try:
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
    finally:
        page.close()


def test_dashboard_asks_again_for_a_refused_key(
    browser: Any, tenant: Tenant, api_url: str
) -> None:
    page = browser.new_page()
    console = Console(page)
    try:
        page.goto(f"{api_url}/#key=pq_not_a_key")
        page.wait_for_selector("#login-message.error", state="visible")
        assert page.is_hidden("#board")

        page.fill("#key", tenant.key)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#models td:text-is('iris')")
        # Chromium logs the 401 itself; the page threw nothing.
        assert [e for e in console.errors if "401" not in e] == []
    finally:
        page.close()
