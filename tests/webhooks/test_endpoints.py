"""Registering endpoints: safe targets only, secrets shown once, tenants apart."""

from __future__ import annotations

import pytest

from tests.support.tenants import Tenant
from tests.webhooks.conftest import Receiver


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://localhost./",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.8/hook",
    "http://[fd00::1]/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:pass@example.com/",
])
def test_unsafe_targets_are_refused_at_registration_and_on_jobs(
    tenant: Tenant, url: str,
) -> None:
    response = tenant.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unsafe_webhook_target" and error["field"] == "url"
    tenant.post("/v1/webhooks/job-secret")
    on_job = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [[1, 2, 3, 4]],
                                           "webhook_url": url})
    assert on_job.status_code == 400 and on_job.json()["error"]["field"] == "webhook_url"


def test_endpoints_are_listed_without_secrets_and_deleted(
    tenant: Tenant, receiver: Receiver,
) -> None:
    made = tenant.post("/v1/webhooks", json={"url": receiver.url("ok/list"),
                                             "events": ["job.failed", "job.expired"]})
    assert made.status_code == 201 and made.headers["Location"].endswith(made.json()["id"])
    listed = tenant.get("/v1/webhooks").json()["endpoints"]
    assert [e["id"] for e in listed] == [made.json()["id"]]
    assert "secret" not in listed[0] and listed[0]["events"] == ["job.expired", "job.failed"]
    rotated = tenant.post(f"/v1/webhooks/{made.json()['id']}/rotate")
    assert rotated.status_code == 200 and rotated.json()["secret"] != made.json()["secret"]
    assert rotated.json()["previous_secret_valid_until"]
    assert tenant.http.delete(f"{tenant.base_url}/v1/webhooks/{made.json()['id']}",
                              timeout=10).status_code == 204
    assert tenant.get("/v1/webhooks").json()["endpoints"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({}, "url"),
    ({"url": 5}, "url"),
    ({"url": "https://example.com/h", "events": ["job.done"]}, "events"),
    ({"url": "https://example.com/h", "events": "job.failed"}, "events"),
    ({"url": "https://example.com/h", "secret": "mine"}, "secret"),
])
def test_bad_registrations_name_the_field(
    tenant: Tenant, body: dict[str, object], field: str,
) -> None:
    response = tenant.post("/v1/webhooks", json=body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field


def test_another_tenants_endpoints_and_deliveries_look_missing(
    tenant: Tenant, receiver: Receiver, hooks: object,
) -> None:
    from tests.faults.conftest import Stack

    assert isinstance(hooks, Stack)
    other = hooks.tenant()
    made = tenant.post("/v1/webhooks", json={"url": receiver.url("ok/bola")}).json()
    job_id = tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2]])
    for method, path in [("get", f"/v1/webhooks/{made['id']}"),
                         ("post", f"/v1/webhooks/{made['id']}/rotate"),
                         ("delete", f"/v1/webhooks/{made['id']}"),
                         ("get", f"/v1/jobs/{job_id}/deliveries"),
                         ("post", f"/v1/jobs/{job_id}/deliveries/redeliver")]:
        response = getattr(other.http, method)(other.base_url + path, timeout=10)
        assert response.status_code == 404, (method, path, response.text)
    assert other.get("/v1/webhooks").json()["endpoints"] == []


def test_a_tenant_registers_at_most_the_endpoint_limit(tenant: Tenant, receiver: Receiver,
                                                       hooks: object) -> None:
    """PREDQ_WEBHOOK_MAX_ENDPOINTS (3 on this stack): one more is 409 with a JSON error; the
    job secret is no endpoint; deleting one makes room."""
    assert tenant.post("/v1/webhooks/job-secret").status_code == 201
    made = [tenant.post("/v1/webhooks", json={"url": receiver.url(f"ok/cap-{i}")})
            for i in range(3)]
    assert [m.status_code for m in made] == [201, 201, 201]
    over = tenant.post("/v1/webhooks", json={"url": receiver.url("ok/cap-3")})
    assert over.status_code == 409, over.text
    error = over.json()["error"]
    assert error["code"] == "too_many_endpoints" and error["field"] == "url"
    assert "3 webhook endpoints" in error["message"]
    assert len(tenant.get("/v1/webhooks").json()["endpoints"]) == 3  # nothing half made
    assert tenant.delete(f"/v1/webhooks/{made[0].json()['id']}").status_code == 204
    assert tenant.post("/v1/webhooks", json={"url": receiver.url("ok/cap-3")}
                       ).status_code == 201
