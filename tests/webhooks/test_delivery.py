"""Webhook delivery end to end: a real worker, a real deliverer, a real HTTP receiver."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import Engine, select
from standardwebhooks import Webhook

from service.core import times
from service.jobs import lifecycle
from service.jobs.ending import Ending
from service.jobs.lifecycle import NewJob, Outcome
from service.models.registry import ModelInfo
from service.store.db import webhook_events
from service.webhooks import events as webhook_domain
from tests.faults.conftest import Stack
from tests.support.tenants import Tenant
from tests.webhooks.conftest import Receiver, until

SETOSA = [5.1, 3.5, 1.4, 0.2]


def _endpoint(tenant: Tenant, url: str, **extra: object) -> dict[str, object]:
    response = tenant.post("/v1/webhooks", json={"url": url, **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    assert str(body["secret"]).startswith("whsec_")
    return body  # type: ignore[no-any-return]


def _deliveries(tenant: Tenant, job_id: str) -> list[dict[str, object]]:
    return tenant.get(f"/v1/jobs/{job_id}/deliveries").json()["events"]  # type: ignore[no-any-return]


def _status(tenant: Tenant, job_id: str) -> object:
    """The status of the job's only event; None before the job has one."""
    found = _deliveries(tenant, job_id)
    return found[0]["status"] if found else None


def test_a_finished_job_is_pushed_signed_as_standard_webhooks_says(
    tenant: Tenant, receiver: Receiver, models: dict[str, ModelInfo],
) -> None:
    endpoint = _endpoint(tenant, receiver.url(f"ok/{tenant.name}"))
    job_id = tenant.submit("iris", [SETOSA])
    until(lambda: len(receiver.at(f"ok/{tenant.name}")) == 1, what="the delivery")
    got = receiver.at(f"ok/{tenant.name}")[0]
    # Any Standard Webhooks library verifies it with the endpoint's secret.
    payload = Webhook(str(endpoint["secret"])).verify(got.body, got.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job_id and payload["data"]["status"] == "succeeded"
    assert payload["data"]["result"]["predictions"] == ["setosa"]
    assert (payload["data"]["model"], payload["data"]["version"]) == ("iris", "1")
    until(lambda: _status(tenant, job_id) == "delivered", what="the log")
    [event] = _deliveries(tenant, job_id)
    assert event["id"] == got.headers["webhook-id"] and event["type"] == "job.succeeded"
    [attempt] = event["attempts"]  # type: ignore[misc]
    assert attempt["status_code"] == 200 and attempt["latency_ms"] >= 0
    assert attempt["error"] is None


def test_a_failing_receiver_gets_the_same_event_until_it_answers_2xx(
    tenant: Tenant, receiver: Receiver,
) -> None:
    _endpoint(tenant, receiver.url(f"flaky/{tenant.name}"))
    job_id = tenant.submit("iris", [SETOSA])
    until(lambda: len(receiver.at(f"flaky/{tenant.name}")) == 3, what="three attempts")
    ids = {r.headers["webhook-id"] for r in receiver.at(f"flaky/{tenant.name}")}
    assert len(ids) == 1  # one event id across the retries
    bodies = {r.body for r in receiver.at(f"flaky/{tenant.name}")}
    assert len(bodies) == 1  # and the same bytes
    until(lambda: _status(tenant, job_id) == "delivered", what="the log")
    attempts = _deliveries(tenant, job_id)[0]["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]  # type: ignore[index]


def test_a_receiver_that_stays_down_is_dead_lettered_after_the_schedule(
    tenant: Tenant, dead_port: int,
) -> None:
    _endpoint(tenant, f"http://127.0.0.1:{dead_port}/down")
    job_id = tenant.submit("iris", [SETOSA])
    until(lambda: _status(tenant, job_id) == "dead", what="the dead letter")
    [event] = _deliveries(tenant, job_id)
    attempts = event["attempts"]
    assert len(attempts) == 4  # type: ignore[arg-type] # the first and three retries
    assert all("cannot connect" in str(a["error"]) for a in attempts)  # type: ignore[union-attr]


def test_410_disables_the_endpoint(tenant: Tenant, receiver: Receiver) -> None:
    endpoint = _endpoint(tenant, receiver.url(f"gone/{tenant.name}"))
    first = tenant.submit("iris", [SETOSA])
    until(lambda: _status(tenant, first) == "dead", what="the 410 to end the event")
    assert len(_deliveries(tenant, first)[0]["attempts"]) == 1  # type: ignore[arg-type]
    shown = tenant.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert shown["disabled"] is True and "410" in shown["disabled_reason"]
    second = tenant.submit("iris", [SETOSA])
    assert tenant.wait(second)["status"] == "succeeded"
    assert _deliveries(tenant, second) == []  # a disabled endpoint gets nothing new


def test_redirects_are_not_followed(tenant: Tenant, receiver: Receiver) -> None:
    _endpoint(tenant, receiver.url(f"redirect/{tenant.name}"))
    job_id = tenant.submit("iris", [SETOSA])
    until(lambda: _deliveries(tenant, job_id) and _deliveries(tenant, job_id)[0]["attempts"],
          what="an attempt")
    attempt = _deliveries(tenant, job_id)[0]["attempts"][0]  # type: ignore[index]
    assert attempt["status_code"] == 302 and "not followed" in attempt["error"]


def test_redeliver_sends_the_same_event_again(tenant: Tenant, receiver: Receiver) -> None:
    _endpoint(tenant, receiver.url(f"ok/again-{tenant.name}"))
    job_id = tenant.submit("iris", [SETOSA])
    until(lambda: len(receiver.at(f"ok/again-{tenant.name}")) == 1, what="the delivery")
    until(lambda: _status(tenant, job_id) == "delivered", what="the log")
    response = tenant.post(f"/v1/jobs/{job_id}/deliveries/redeliver")
    assert response.status_code == 202
    until(lambda: len(receiver.at(f"ok/again-{tenant.name}")) == 2, what="the redelivery")
    first, second = receiver.at(f"ok/again-{tenant.name}")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == response.json()[
        "events"][0]
    until(lambda: len(_deliveries(tenant, job_id)[0]["attempts"]) == 2,  # type: ignore[arg-type]
          what="the second attempt in the log")


def _finish_as_a_worker_does(engine: Engine, tenant: Tenant,
                             models: dict[str, ModelInfo]) -> str:
    """Claim a new job and commit its outcome with its webhook event, in one transaction, as
    a worker does, and publish nothing; return the event id."""
    job = NewJob(tenant.name, models["iris"].id, np.array([SETOSA])).with_id()
    with engine.begin() as conn:
        lifecycle.insert_jobs(conn, [job])
        lifecycle.claim(conn, [job.id], 60)
    with engine.begin() as conn:  # an Ending with no after-commit hooks: nothing is sent
        ending = Ending(conn, max_inline=2000)
        claimed = lifecycle.Claimed(job.id, job.model_id, b"", 1, 1, job.queue, job.tenant)
        ending.write_outcomes([Outcome(job.id, 1, result={"predictions": ["setosa"]})],
                             {job.id: claimed})
        [event_id] = ending.events
    return event_id


def test_an_event_committed_but_never_sent_is_delivered_once_by_the_reconciler(
    hooks: Stack, tenant: Tenant, receiver: Receiver, engine: Engine,
    models: dict[str, ModelInfo],
) -> None:
    """The worker commits a job's outcome with its event, then dies before publishing."""
    from service.core.broker import celery_publisher
    from workers.app import make_celery

    _endpoint(tenant, receiver.url(f"ok/crash-{tenant.name}"))
    event_id = _finish_as_a_worker_does(engine, tenant, models)

    def published_at() -> object:
        with engine.connect() as conn:
            return conn.execute(select(webhook_events.c.published_at).where(
                webhook_events.c.id == event_id)).scalar()

    # ... and nothing is published. The reconciler sends it once republish_after has passed
    # (its count also holds other tests' events: the database is the session's, so the sweep
    # is watched through this event's own stamp).
    recorded = published_at()
    until(lambda: hooks.reconcile()["webhooks"] >= 1 and published_at() != recorded,
          what="the sweep to send it")
    until(lambda: len(receiver.at(f"ok/crash-{tenant.name}")) == 1, what="the delivery")
    # A late second message for the same event (a redelivery) sends nothing more.
    celery = make_celery(hooks.settings)
    celery_publisher(celery)("predq.deliver", "webhooks", [event_id, event_id])
    celery.close()
    with engine.connect() as conn:
        until(lambda: conn.execute(select(webhook_events.c.status).where(
            webhook_events.c.id == event_id)).scalar() == "delivered", what="delivered")
    sent = published_at()
    hooks.reconcile()  # a delivered event is not sent again
    assert published_at() == sent
    assert len(receiver.at(f"ok/crash-{tenant.name}")) == 1
    assert receiver.at(f"ok/crash-{tenant.name}")[0].headers["webhook-id"] == event_id


def test_a_jobs_own_webhook_url_is_signed_with_the_tenants_job_secret(
    tenant: Tenant, receiver: Receiver,
) -> None:
    url = receiver.url(f"ok/own-{tenant.name}")
    refused = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [SETOSA],
                                            "webhook_url": url})
    assert refused.status_code == 400 and "job-secret" in refused.json()["error"]["message"]
    made = tenant.post("/v1/webhooks/job-secret")
    assert made.status_code == 201
    secret = made.json()["secret"]
    job_id = tenant.submit("iris", [SETOSA], webhook_url=url)
    until(lambda: len(receiver.at(f"ok/own-{tenant.name}")) == 1, what="the delivery")
    got = receiver.at(f"ok/own-{tenant.name}")[0]
    assert Webhook(secret).verify(got.body, got.headers)["data"]["id"] == job_id
    # Rotation: both secrets sign during the grace period; each one verifies on its own.
    rotated = tenant.post("/v1/webhooks/job-secret")
    assert rotated.status_code == 200 and rotated.json()["secret"] != secret
    second = tenant.submit("iris", [SETOSA], webhook_url=url)
    until(lambda: len(receiver.at(f"ok/own-{tenant.name}")) == 2, what="the second delivery")
    got = receiver.at(f"ok/own-{tenant.name}")[1]
    for key in (secret, rotated.json()["secret"]):
        assert Webhook(key).verify(got.body, got.headers)["data"]["id"] == second


def test_events_filter_and_large_results_ride_as_a_link(
    tenant: Tenant, receiver: Receiver,
) -> None:
    _endpoint(tenant, receiver.url(f"ok/failures-{tenant.name}"), events=["job.failed"])
    _endpoint(tenant, receiver.url(f"ok/all-{tenant.name}"))
    good = tenant.submit("iris", [SETOSA] * 40)  # its result is larger than 2 000 bytes
    bad = tenant.submit("fragile", [[-1, 1, 1, 1]])
    until(lambda: len(receiver.at(f"ok/all-{tenant.name}")) == 2, what="both events")
    until(lambda: len(receiver.at(f"ok/failures-{tenant.name}")) == 1, what="the failure")
    failure = json.loads(receiver.at(f"ok/failures-{tenant.name}")[0].body)
    assert failure["type"] == "job.failed" and failure["data"]["id"] == bad
    assert "prediction failed" in failure["data"]["error"]
    by_job = {json.loads(r.body)["data"]["id"]: json.loads(r.body)
              for r in receiver.at(f"ok/all-{tenant.name}")}
    assert by_job[good]["data"]["result_url"] == f"/v1/jobs/{good}/result"
    assert "result" not in by_job[good]["data"]


def test_cancel_and_expiry_are_events_too(tenant: Tenant, receiver: Receiver) -> None:
    _endpoint(tenant, receiver.url(f"ok/ends-{tenant.name}"))
    slow = tenant.submit("sleepy", [[1500, 0]])
    until(lambda: tenant.get(f"/v1/jobs/{slow}").json()["status"] == "running", what="start")
    assert tenant.post(f"/v1/jobs/{slow}/cancel").status_code == 200
    until(lambda: len(receiver.at(f"ok/ends-{tenant.name}")) == 1, what="the cancel event")
    assert json.loads(receiver.at(f"ok/ends-{tenant.name}")[0].body)["type"] == "job.cancelled"
    assert tenant.wait(tenant.submit("iris", [SETOSA]))["status"] == "succeeded"
    until(lambda: len(receiver.at(f"ok/ends-{tenant.name}")) == 2, what="the next event")
    # The cancelled job's worker finished later: it wrote no second event for that job.
    types = [json.loads(r.body)["type"] for r in receiver.at(f"ok/ends-{tenant.name}")]
    assert sorted(types) == ["job.cancelled", "job.succeeded"]


def test_a_job_that_expires_unrun_is_an_event(
    hooks: Stack, tenant: Tenant, receiver: Receiver, engine: Engine,
    models: dict[str, ModelInfo],
) -> None:
    _endpoint(tenant, receiver.url(f"ok/expired-{tenant.name}"))
    job = NewJob(tenant.name, models["iris"].id, np.array([SETOSA]),
                      deadline=times.utcnow()).with_id()
    with engine.begin() as conn:  # its message was lost; its deadline has passed
        lifecycle.insert_jobs(conn, [job])
    assert hooks.reconcile()["expired"] >= 1
    until(lambda: len(receiver.at(f"ok/expired-{tenant.name}")) == 1, what="the event")
    payload = json.loads(receiver.at(f"ok/expired-{tenant.name}")[0].body)
    assert payload["type"] == "job.expired" and payload["data"]["id"] == job.id
    assert "deadline" in payload["data"]["error"]


def test_a_retry_waits_at_least_what_retry_after_asks(
    tenant: Tenant, engine: Engine, models: dict[str, ModelInfo], receiver: Receiver,
) -> None:
    _endpoint(tenant, receiver.url(f"ok/later-{tenant.name}"))
    event_id = _finish_as_a_worker_does(engine, tenant, models)
    with engine.begin() as conn:
        event = webhook_domain.claim(conn, event_id, 60)
        assert event is not None
        delay = webhook_domain.complete(
            conn, event, webhook_domain.Attempt(429, 3.0, "answered 429", retry_after=120),
            schedule=[5, 300])
        assert delay is not None and delay >= 120
        due = conn.execute(select(webhook_events.c.next_attempt_at)
                           .where(webhook_events.c.id == event_id)).scalar_one()
    if due.tzinfo is None:
        from datetime import UTC

        due = due.replace(tzinfo=UTC)
    assert (due - times.utcnow()).total_seconds() > 110
