"""What an operator reads and does through the API beyond submitting: job lists a page at a
time, a job's page (input, workers, chunks that stopped), who cancelled, errors that name the
setting or format to use, the queues over time and grouped webhook failures."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import redis
from sqlalchemy import Engine, insert

from service.core.messaging import BULK
from service.core.settings import Settings
from service.core.times import iso, utcnow
from service.jobs import chunkclaims, chunkstore, lifecycle
from service.jobs.lifecycle import NewJob
from service.jobs.requests import JobRequest
from service.models.registry import ModelInfo
from service.ops import heartbeats, queuehistory
from service.store.db import webhook_events
from service.tenants import keys
from tests.support.tenants import Tenant

ROW = [[5.1, 3.5, 1.4, 0.2]]


def _queued(engine: Engine, tenant: Tenant, model: ModelInfo, n: int) -> list[str]:
    """`n` queued jobs, oldest first, committed but never published: no worker runs them."""
    new = [NewJob(tenant.name, model.id, np.array(ROW)).with_id() for _ in range(n)]
    ids = []
    for job in new:  # one transaction each: each its own created_at
        with engine.begin() as conn:
            ids += lifecycle.insert_jobs(conn, [job])
    return ids


def _bulk(engine: Engine, tenant: Tenant, model: ModelInfo, chunks: int = 3) -> str:
    """A queued bulk job of `chunks` stored chunks of 5 rows, never published."""
    job_id = str(uuid.uuid4())
    req = JobRequest(tenant.name, model, queue=BULK, input_format="csv")
    with engine.begin() as conn:
        for seq in range(chunks):
            chunkstore.add_chunk(conn, job_id, seq, np.full((5, 4), 1.0))
        chunkstore.insert_job(conn, job_id, req, 5 * chunks, chunks)
    return job_id


def test_the_job_list_pages_by_cursor_in_either_order_and_filters_by_time(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    ids = _queued(engine, tenant, models["iris"], 5)
    seen: list[str] = []
    cursor = None
    while True:
        page = tenant.get("/v1/jobs", params={"limit": 2, "cursor": cursor}).json()
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # every job once, newest first
    oldest = tenant.get("/v1/jobs", params={"sort": "oldest", "limit": 3}).json()
    assert [j["id"] for j in oldest["jobs"]] == ids[:3] and oldest["next"]
    rest = tenant.get("/v1/jobs", params={"sort": "oldest", "cursor": oldest["next"]}).json()
    assert [j["id"] for j in rest["jobs"]] == ids[3:] and rest["next"] is None

    third = tenant.get(f"/v1/jobs/{ids[2]}").json()["created_at"]
    since = tenant.get("/v1/jobs", params={"since": third}).json()["jobs"]
    assert [j["id"] for j in since] == ids[:1:-1]
    until = tenant.get("/v1/jobs", params={"until": third}).json()["jobs"]
    assert [j["id"] for j in until] == ids[1::-1]
    later = iso(utcnow() + timedelta(hours=1))
    assert tenant.get("/v1/jobs", params={"since": later}).json() == {"jobs": [], "next": None}
    empty = {"since": later, "until": third}  # until before since: an empty range, not an error
    assert tenant.get("/v1/jobs", params=empty).json() == {"jobs": [], "next": None}


def test_bad_list_arguments_are_named(tenant: Tenant) -> None:
    for params, field in [({"cursor": "not-a-cursor"}, "cursor"), ({"since": "yesterday"}, "since"),
                          ({"since": "2026-12-01T09:30:00"}, "since"), ({"sort": "size"}, "sort")]:
        answer = tenant.get("/v1/jobs", params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["field"] == field, answer.text


def test_a_cancel_names_the_key_that_cancelled(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    [job_id] = _queued(engine, tenant, models["iris"], 1)
    with engine.begin() as conn:
        named = keys.create_key(conn, tenant.name, ("read", "submit"), name="night shift")
    answer = tenant.http.post(f"{tenant.base_url}/v1/jobs/{job_id}/cancel", timeout=30,
                              headers={"Authorization": f"Bearer {named}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["error"] == f"cancelled by key {named[:10]} (night shift)"


def test_a_bulk_job_s_page_tells_its_attempts_input_worker_and_stopped_chunks(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    job_id = _bulk(engine, tenant, models["iris"])
    with engine.begin() as conn:
        assert chunkclaims.claim(conn, job_id, 0, 60, worker="test-host:41") is not None
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["job"]["attempts"] == 1 and page["job"]["status"] == "running"
    assert page["input"] == {"source": "upload", "format": "csv", "rows": 15, "columns": 4}
    assert page["workers"] == ["test-host:41"]
    assert (page["chunks"]["running"], page["chunks"]["pending"]) == (1, 2)
    assert page["actions"]["cancel"] and not page["actions"]["retry"]

    assert tenant.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    chunks = page["chunks"]
    # Cancelled: nothing of it runs or waits any more, whatever the chunk rows still say.
    assert (chunks["running"], chunks["pending"], chunks["done"], chunks["stopped"]) == \
        (0, 0, 0, 3)
    assert page["job"]["attempts"] == 1 and page["actions"]["retry"]


def test_a_json_job_s_input_is_json_and_names_no_worker_before_its_claim(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    [job_id] = _queued(engine, tenant, models["iris"], 1)
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["input"] == {"source": "json", "format": "json", "rows": 1, "columns": 4}
    assert page["workers"] == [] and page["job"]["attempts"] == 0
    with engine.begin() as conn:
        lifecycle.claim(conn, [job_id], 60, worker="test-host:42")
    page = tenant.get(f"/v1/jobs/{job_id}/overview").json()
    assert page["workers"] == ["test-host:42"] and page["job"]["attempts"] == 1


def test_errors_name_the_formats_and_the_setting_to_use(tenant: Tenant) -> None:
    answer = tenant.post("/v1/jobs", data="a,b\n1,2\n", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415
    message = answer.json()["error"]["message"]
    assert "application/json" in message and "text/csv" in message and \
        "application/x-npy" in message, message
    hook = tenant.post("/v1/jobs", json={"model": "iris", "inputs": ROW,
                                         "webhook_url": "http://127.0.0.1:9000/hook"})
    assert hook.status_code == 400
    message = hook.json()["error"]["message"]
    assert "loopback" in message and "PREDQ_WEBHOOK_ALLOW_HOSTS=127.0.0.1:9000" in message


def test_the_queue_history_holds_what_the_reconciler_measured(
    tenant: Tenant, engine: Engine, settings: Settings, models: dict[str, ModelInfo]
) -> None:
    _queued(engine, tenant, models["iris"], 2)
    _bulk(engine, tenant, models["iris"], chunks=2)
    with engine.connect() as conn:
        depths = queuehistory.measure(conn)
    assert depths["predict.normal"].jobs >= 2 and depths["predict.bulk"].chunks >= 2
    assert depths["predict.bulk"].rows >= 10
    assert depths["predict.normal"].oldest_age_seconds is not None
    client = redis.Redis.from_url(settings.redis_url)
    queuehistory.record(client, depths)
    samples = tenant.get("/v1/queues/history?minutes=5").json()["samples"]
    last = samples[-1]["queues"]
    assert last["predict.bulk"]["chunks"] == depths["predict.bulk"].chunks
    assert tenant.get("/v1/queues/history?minutes=0").status_code == 400
    client.close()


def test_readyz_counts_predicting_workers_not_the_webhook_deliverer(
    tenant: Tenant, settings: Settings
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    before = heartbeats.live_workers(client)
    deliverer = heartbeats.Identity("test-host", 7001, "deliverer@test", ("webhooks",), 4)
    predictor = heartbeats.Identity("test-host", 7002, "celery@test", ("predict.normal",), 2)
    try:
        heartbeats.heartbeat(client, deliverer.name, deliverer)
        assert heartbeats.live_workers(client) == before
        heartbeats.heartbeat(client, predictor.name, predictor)
        assert heartbeats.live_workers(client) == before + 1
        listed = {w["name"]: w for w in tenant.get("/v1/workers").json()["workers"]}
        assert listed[deliverer.name]["role"] == "webhooks"
        assert listed[predictor.name]["role"] == "predict"
    finally:
        for who in (deliverer, predictor):
            heartbeats.forget(client, who.name)
        client.close()


def test_webhook_failures_are_grouped_by_endpoint_and_error(
    tenant: Tenant, engine: Engine
) -> None:
    now = utcnow()

    def event(error: str, age: int) -> dict[str, Any]:
        return {"id": f"msg_{uuid.uuid4().hex}", "tenant": tenant.name,
                "job_id": str(uuid.uuid4()), "endpoint_id": "we_test",
                "url": "https://example.com/hook", "type": "job.succeeded", "payload": "{}",
                "status": "dead", "attempts": 8, "next_attempt_at": now,
                "created_at": now - timedelta(seconds=age), "last_error": error}

    same = [event("answered 500", age) for age in (30, 20, 10)]
    other = event("timed out", 40)
    with engine.begin() as conn:
        conn.execute(insert(webhook_events), [*same, other])
    groups = tenant.get("/v1/webhooks/failures/groups").json()["groups"]
    assert [(g["last_error"], g["events"], g["attempts"]) for g in groups] == [
        ("answered 500", 3, 24), ("timed out", 1, 8)]
    assert groups[0]["job_id"] == same[-1]["job_id"]  # the newest event's job
    assert len(tenant.get("/v1/webhooks/failures/groups?limit=1").json()["groups"]) == 1
