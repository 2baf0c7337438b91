"""The dashboard's operator views in a real headless Chromium: a link's key asked about before
it replaces the browser's, the job list a page at a time, a job's page with its input, worker,
progress and actions, the workers' processes, the queues over time and grouped failures."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from sqlalchemy import Engine, insert

from service.core.settings import Settings
from service.core.times import utcnow
from service.jobs import lifecycle
from service.jobs.lifecycle import NewJob
from service.models.registry import ModelInfo
from service.ops import queuehistory
from service.store.db import webhook_events
from tests.support.browser import artifact, chromium, watched_page
from tests.support.processes import WorkerProcess
from tests.support.tenants import Tenant

ROW = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _queued(engine: Engine, tenant: Tenant, model: ModelInfo, n: int) -> list[str]:
    """`n` queued jobs, oldest first, never published (no worker runs them)."""
    ids = []
    for _ in range(n):
        with engine.begin() as conn:
            ids += lifecycle.insert_jobs(conn, [NewJob(tenant.name, model.id,
                                                       np.array(ROW)).with_id()])
    return ids


def _listed(page: Any) -> list[str]:
    return page.eval_on_selector_all("#jobs tbody tr[data-job-id]",
                                     "rows => rows.map(r => r.dataset.jobId)")


def _open(page: Any, api_url: str, key: str) -> None:
    page.goto(f"{api_url}/#key={key}")
    page.locator("#board:visible, #key-offer:visible").first.wait_for()
    if page.is_visible("#key-offer"):
        page.click("#key-offer-use")
    page.wait_for_selector("#board", state="visible")


def test_a_link_with_another_key_asks_first_and_a_malformed_job_link_is_a_missing_job(
    browser: Any, tenant: Tenant, other_tenant: Tenant, api_url: str
) -> None:
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        page.goto(f"{api_url}/#key={other_tenant.key}")
        page.wait_for_selector("#key-offer", state="visible")
        assert "key=" not in page.url and page.is_hidden("#board")
        assert other_tenant.key[:10] in page.inner_text("#key-offer-text")
        assert other_tenant.key not in page.inner_text("#key-offer-text")  # never shown whole
        page.screenshot(path=str(artifact("dashboard-key-offer.png")))
        page.click("#key-offer-keep")
        page.wait_for_selector("#board", state="visible")
        assert page.evaluate("localStorage.getItem('predq.key')") == tenant.key

        page.goto(f"{api_url}/#key={other_tenant.key}")
        page.click("#key-offer-use")
        page.wait_for_selector("#board", state="visible")
        assert page.evaluate("localStorage.getItem('predq.key')") == other_tenant.key

        page.goto(f"{api_url}/#/jobs/%E0%A4%A")
        page.wait_for_selector('#job-page[data-status="missing"]')
        assert page.is_visible("#job-missing")
        assert console.errors == []


def test_the_job_list_pages_sorts_and_filters_by_time(
    browser: Any, tenant: Tenant, engine: Engine, api_url: str, models: dict[str, ModelInfo]
) -> None:
    from playwright.sync_api import expect

    ids = _queued(engine, tenant, models["iris"], 30)
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        rows = page.locator("#jobs tbody tr[data-job-id]")
        expect(rows).to_have_count(25)
        assert _listed(page) == ids[:4:-1]  # the newest 25
        page.click("#jobs-next")
        expect(rows).to_have_count(5)
        assert _listed(page) == ids[4::-1] and page.is_disabled("#jobs-next")
        assert page.inner_text("#jobs-page") == "page 2"
        page.click("#jobs-prev")
        expect(rows).to_have_count(25)

        page.select_option("#job-sort", "oldest")
        expect(page.locator(f'#jobs tbody tr[data-job-id="{ids[0]}"]')).to_have_count(1)
        assert _listed(page)[:3] == ids[:3] and "sort=oldest" in page.url
        page.select_option("#job-range", "15m")
        expect(rows).to_have_count(25)  # created just now: all within the last 15 minutes
        assert "range=15m" in page.url
        page.screenshot(path=str(artifact("dashboard-paged.png")), full_page=True)
        assert console.errors == []


def test_a_bulk_job_s_page_names_its_input_worker_and_progress_and_downloads_its_result(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str
) -> None:
    names = "sepal_length,sepal_width,petal_length,petal_width"
    body = "\n".join([names, *["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3"] * 600])
    answer = tenant.post("/v1/jobs?model=iris", data=body.encode(),
                         headers={"Content-Type": "text/csv"})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert tenant.wait(job_id)["status"] == "succeeded"
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        page.goto(f"{api_url}/#/jobs/{job_id}")
        page.wait_for_selector('#job-page[data-status="succeeded"]')
        facts = page.locator("#job-facts")
        assert facts.locator('[data-fact="input"]').inner_text() == \
            "1,200 rows × 4 columns, CSV upload"
        assert facts.locator('[data-fact="rows"]').inner_text() == "1,200 of 1,200 done"
        assert f":{worker.proc.pid}" in facts.locator('[data-fact="workers"]').inner_text()
        assert "100%" in facts.inner_text()
        assert page.is_visible("#job-retry") and page.is_hidden("#job-cancel")
        page.click("#job-retry")  # an upload that did not keep its inputs: refused, and why
        page.wait_for_selector("#job-message.refused")
        assert "keep_inputs=true" in page.inner_text("#job-message")
        page.wait_for_timeout(3500)  # the next refresh leaves the message where it is
        assert "keep_inputs=true" in page.inner_text("#job-message")
        with page.expect_download() as got:
            page.click("#job-download")
        text = open(got.value.path(), encoding="utf-8").read()  # noqa: SIM115
        table = list(csv.reader(io.StringIO(text)))
        assert len(table) == 1201 and table[1][0] == "setosa"
        page.screenshot(path=str(artifact("job-bulk.png")), full_page=True)
        # Chromium logs the refused retry's 409 itself; the page threw nothing.
        assert [e for e in console.errors if "409" not in e] == []


def test_cancel_asks_first_and_the_page_says_who_cancelled(
    browser: Any, tenant: Tenant, engine: Engine, api_url: str, models: dict[str, ModelInfo]
) -> None:
    [job_id] = _queued(engine, tenant, models["iris"], 1)
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        page.goto(f"{api_url}/#/jobs/{job_id}")
        page.wait_for_selector('#job-page[data-status="queued"]')
        page.click("#job-cancel")
        assert page.is_visible("#job-confirm") and page.is_hidden("#job-cancel")
        page.click("#job-cancel-no")  # thought better of it
        page.wait_for_selector("#job-cancel", state="visible")
        assert tenant.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        page.click("#job-cancel")
        page.screenshot(path=str(artifact("job-cancel-confirm.png")))
        page.click("#job-cancel-yes")
        page.wait_for_selector('#job-page[data-status="cancelled"]')
        page.wait_for_selector("#job-cancelled-by", state="visible")
        assert page.inner_text("#job-cancelled-by") == f"cancelled by key {tenant.key[:10]}"
        assert page.is_hidden("#job-error") and page.is_visible("#job-retry")

        page.click("#job-retry")  # a new job of the same rows, whose page names this one
        page.wait_for_selector("#job-message a.job-link")
        retried = page.get_attribute("#job-message a.job-link", "title")
        assert retried and retried != job_id
        page.click("#job-message a.job-link")
        page.wait_for_selector(f'#job-facts [data-fact="retry-of"] a[title="{job_id}"]')
        assert page.inner_text("#job-id") == retried
        assert tenant.get(f"/v1/jobs/{retried}").json()["retry_of"] == job_id
        page.screenshot(path=str(artifact("job-retried.png")), full_page=True)
        assert console.errors == []


def test_the_workers_view_shows_each_process_busy_or_idle_with_cpu_and_memory(
    browser: Any, worker: WorkerProcess, tenant: Tenant, api_url: str
) -> None:
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        page.click("#nav-workers")
        page.wait_for_selector("#workers-page", state="visible")
        mine = f'#worker-processes tr[data-worker$=":{worker.proc.pid}"]'
        page.wait_for_selector(f'{mine}[data-state="main"]', timeout=30_000)  # a heartbeat
        job_id = tenant.submit("sleepy", [[8000.0, 0.0]])  # 8 s in a pool process
        busy = page.locator(f'{mine}[data-state="busy"]')
        busy.wait_for(timeout=30_000)
        assert "1 job" in busy.inner_text() and job_id not in page.content()
        cells = busy.locator("td")
        assert cells.nth(5).inner_text().endswith("%") and cells.nth(6).inner_text()[-2:] in \
            ("kB", "MB", "GB")
        page.screenshot(path=str(artifact("dashboard-workers.png")), full_page=True)
        assert tenant.wait(job_id)["status"] == "succeeded"
        page.locator(f'{mine}[data-state="busy"]').wait_for(state="detached", timeout=30_000)
        assert console.errors == []


def test_the_board_charts_the_queues_and_groups_webhook_failures(
    browser: Any, tenant: Tenant, engine: Engine, settings: Settings,
    models: dict[str, ModelInfo], api_url: str
) -> None:
    _queued(engine, tenant, models["iris"], 3)
    client = redis.Redis.from_url(settings.redis_url)
    with engine.connect() as conn:
        for _ in range(2):
            queuehistory.record(client, queuehistory.measure(conn), at=time.time())
    client.close()
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(webhook_events), [{
            "id": f"msg_{uuid.uuid4().hex}", "tenant": tenant.name, "job_id": str(uuid.uuid4()),
            "endpoint_id": "we_test", "url": "https://hooks.example.com/in", "type":
            "job.succeeded", "payload": "{}", "status": "dead", "attempts": 8,
            "next_attempt_at": now, "created_at": now, "last_error": "answered 500"}
            for _ in range(20)])
    with watched_page(browser) as (page, console):
        _open(page, api_url, tenant.key)
        line = page.locator('#queue-chart path[data-queue="predict.normal"]')
        line.wait_for(state="attached")
        assert (line.get_attribute("d") or "").count("L") >= 1  # two samples joined
        page.select_option("#queue-measure", "rows")
        page.wait_for_selector('#queue-chart path[data-queue="predict.bulk"]', state="attached")
        group = page.locator('#failures tbody tr[data-events="20"]')
        group.wait_for()
        assert page.locator("#failures tbody tr").count() == 1  # twenty alike: one row
        page.screenshot(path=str(artifact("dashboard-board.png")), full_page=True)
        assert console.errors == []
