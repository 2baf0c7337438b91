"""Events of a deleted or disabled endpoint are given up at once, never retried."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import webhook_attempts, webhook_events
from service.webhooks import endpoints
from tests.support.tenants import Tenant, make_tenant
from workers.webhooks import Deliverer

SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def quiet(engine: Engine, api_url: str, models: dict[str, ModelInfo], worker: object
          ) -> Iterator[Tenant]:
    """A tenant of the session's stack, which runs no deliverer: its events wait."""
    yield from make_tenant(engine, api_url)


def waiting_event(tenant: Tenant, url: str) -> tuple[str, str]:
    """(endpoint id, event id) of a job's event that no deliverer has touched."""
    endpoint = tenant.post("/v1/webhooks", json={"url": url})
    assert endpoint.status_code == 201, endpoint.text
    job_id = tenant.submit("iris", [SETOSA])
    assert tenant.wait(job_id)["status"] == "succeeded"
    [event] = tenant.get(f"/v1/jobs/{job_id}/deliveries").json()["events"]
    assert event["status"] == "pending" and event["attempts"] == []
    return str(endpoint.json()["id"]), str(event["id"])


def status(engine: Engine, event_id: str) -> tuple[str, str | None, int]:
    with engine.connect() as conn:
        row = conn.execute(select(webhook_events.c.status, webhook_events.c.last_error)
                           .where(webhook_events.c.id == event_id)).one()
        tries = len(conn.execute(select(webhook_attempts.c.id).where(
            webhook_attempts.c.event_id == event_id)).all())
    return row.status, row.last_error, tries


def test_deleting_an_endpoint_gives_up_its_waiting_events(quiet: Tenant, engine: Engine
                                                          ) -> None:
    endpoint_id, event_id = waiting_event(quiet, "https://example.com/deleted")
    assert quiet.delete(f"/v1/webhooks/{endpoint_id}").status_code == 204
    assert status(engine, event_id) == ("dead", "the endpoint was deleted", 0)


def test_disabling_an_endpoint_gives_up_its_waiting_events(quiet: Tenant, engine: Engine
                                                           ) -> None:
    endpoint_id, event_id = waiting_event(quiet, "https://example.com/disabled")
    with engine.begin() as conn:
        endpoints.disable(conn, endpoint_id, "the receiver answered 410 Gone")
    assert status(engine, event_id)[:2] == (
        "dead", "the endpoint was disabled: the receiver answered 410 Gone")


def test_an_event_sent_again_after_its_endpoint_went_is_not_retried(
    quiet: Tenant, engine: Engine, settings: Settings
) -> None:
    """Redelivered after the delete (pending again), its one attempt finds no endpoint: it
    ends dead then, with no retry scheduled."""
    endpoint_id, event_id = waiting_event(quiet, "https://example.com/gone")
    assert quiet.delete(f"/v1/webhooks/{endpoint_id}").status_code == 204
    job_id = quiet.get("/v1/jobs?limit=1").json()["jobs"][0]["id"]
    assert quiet.post(f"/v1/jobs/{job_id}/deliveries/redeliver").status_code == 202
    assert status(engine, event_id)[0] == "pending"
    assert Deliverer(engine, settings).deliver(event_id) is None  # no next attempt
    assert status(engine, event_id) == ("dead", "the endpoint was deleted or disabled", 1)
