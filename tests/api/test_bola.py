"""Broken object-level authorization probes: another tenant's objects answer exactly like
objects that do not exist, whatever the verb, and so do a thousand random ids."""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.support.tenants import Tenant, make_tenant

JOB_PROBES = [("GET", "/v1/jobs/{}"), ("GET", "/v1/jobs/{}/result"),
              ("DELETE", "/v1/jobs/{}"), ("POST", "/v1/jobs/{}/cancel"),
              ("GET", "/v1/jobs/{}/deliveries"), ("POST", "/v1/jobs/{}/deliveries/redeliver"),
              ("GET", "/v1/jobs/{}/overview")]
ENDPOINT_PROBES = [("GET", "/v1/webhooks/{}"), ("DELETE", "/v1/webhooks/{}"),
                   ("POST", "/v1/webhooks/{}/rotate")]


@pytest.fixture(scope="module")
def server_url(settings: Settings, engine: Engine) -> Iterator[str]:
    from tests.support.processes import LiveServer

    server = LiveServer(settings.replace(webhook_allow_hosts="127.0.0.1"))
    yield server.url
    server.stop()


@pytest.fixture
def owner(engine: Engine, server_url: str, models: dict[str, ModelInfo]) -> Iterator[Tenant]:
    yield from make_tenant(engine, server_url, ("submit", "read", "admin"))


@pytest.fixture
def intruder(engine: Engine, server_url: str) -> Iterator[Tenant]:
    yield from make_tenant(engine, server_url, ("submit", "read", "admin"))


def seen(tenant: Tenant, method: str, path: str, object_id: str) -> tuple[int, str, str]:
    """What a probe shows, with the probed id blanked out of the message."""
    response = tenant.http.request(method, tenant.base_url + path.format(object_id), timeout=30)
    error = response.json().get("error", {})
    return (response.status_code, error.get("code", ""),
            error.get("message", "").replace(object_id, "ID"))


def test_another_tenants_job_endpoint_and_key_look_missing_to_every_verb(
    owner: Tenant, intruder: Tenant, worker: object
) -> None:
    job_id = owner.submit("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert owner.wait(job_id)["status"] == "succeeded"
    endpoint = owner.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]
    missing_job, missing_endpoint = str(uuid.uuid4()), "we_" + uuid.uuid4().hex
    for method, path in JOB_PROBES:
        theirs = seen(intruder, method, path, job_id)
        assert theirs == seen(intruder, method, path, missing_job), (method, path)
        assert theirs[0] == 404
    for method, path in ENDPOINT_PROBES:
        theirs = seen(intruder, method, path, endpoint_id)
        assert theirs == seen(intruder, method, path, missing_endpoint), (method, path)
        assert theirs[0] == 404
    assert seen(intruder, "DELETE", "/v1/keys/{}", owner.key[:10]) == \
        seen(intruder, "DELETE", "/v1/keys/{}", "pq_absent0")
    assert seen(intruder, "DELETE", "/v1/keys/{}", "pq_\u0000bsent")[:2] == (404, "not_found")
    # Nothing leaked into the intruder's lists either, and nothing of the owner's changed.
    assert job_id not in intruder.get("/v1/jobs?limit=500").text
    assert endpoint_id not in intruder.get("/v1/webhooks").text
    assert owner.key[:10] not in intruder.get("/v1/keys").text
    assert owner.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert owner.get(f"/v1/jobs/{job_id}/result").status_code == 200
    assert owner.get(f"/v1/webhooks/{endpoint_id}").status_code == 200
    assert owner.get("/v1/keys").status_code == 200


def random_ids(rng: random.Random, count: int) -> Iterator[str]:
    """UUIDs, near-UUIDs and junk: what a scanner would try."""
    alphabet = string.ascii_letters + string.digits + "-_.~"
    for i in range(count):
        kind = i % 4
        if kind == 0:
            yield str(uuid.UUID(int=rng.getrandbits(128), version=4))
        elif kind == 1:
            yield str(rng.randrange(10**12))
        elif kind == 2:
            yield "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 200)))
        else:
            yield str(uuid.UUID(int=rng.getrandbits(128))).upper()


def test_a_thousand_random_ids_all_answer_like_a_missing_job(owner: Tenant) -> None:
    rng = random.Random(20261129)
    expected = {(method, path): seen(owner, method, path, str(uuid.uuid4()))
                for method, path in JOB_PROBES}
    for i, object_id in enumerate(random_ids(rng, 1000)):
        method, path = JOB_PROBES[i % len(JOB_PROBES)]
        assert seen(owner, method, path, object_id) == expected[(method, path)], object_id
