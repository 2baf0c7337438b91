"""Idempotency-Key: a retried submission gets the original job, never a second one."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, func, select

from service.core.settings import Settings
from service.store.db import idempotency_keys, jobs
from tests.support.processes import ApiProcess, free_port
from tests.support.tenants import Tenant

BODY = {"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}


def jobs_of(engine: Engine, tenant: Tenant) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs).where(
            jobs.c.tenant == tenant.name)).scalar_one())


def test_a_retry_with_the_same_key_and_body_gets_the_original_job(
    tenant: Tenant, engine: Engine
) -> None:
    key = str(uuid.uuid4())
    first = tenant.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key})
    assert first.status_code == 202
    # The same request, its keys in another order and spaced otherwise.
    again = tenant.post("/v1/jobs", headers={"Idempotency-Key": key,
                                             "Content-Type": "application/json"},
                        data='{"inputs": [[5.1, 3.5, 1.4, 0.2]],   "model": "iris"}')
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/v1/jobs/{first.json()['id']}"
    assert jobs_of(engine, tenant) == 1


def test_the_same_key_with_another_body_is_refused(tenant: Tenant, engine: Engine) -> None:
    key = str(uuid.uuid4())
    first = tenant.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key})
    other = tenant.post("/v1/jobs", json={**BODY, "priority": "bulk"},
                        headers={"Idempotency-Key": key})
    assert other.status_code == 422
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["field"] == "Idempotency-Key"
    assert error["job_id"] == first.json()["id"]
    assert jobs_of(engine, tenant) == 1


def test_keys_belong_to_their_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    mine = tenant.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key})
    theirs = other_tenant.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_refused_request_does_not_take_the_key(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    bad = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [[1, 2]]},
                      headers={"Idempotency-Key": key})
    assert bad.status_code == 400
    assert tenant.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key}
                       ).status_code == 202


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_named(tenant: Tenant, key: str) -> None:
    response = tenant.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key.encode()})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "Idempotency-Key"


def test_twenty_concurrent_requests_with_one_key_create_one_job(
    settings: Settings, engine: Engine, tenant: Tenant, tmp_path: Path
) -> None:
    """Two gunicorn processes, each grouping commits: the race is real on both stores."""
    api = ApiProcess(settings.replace(port=free_port(), api_workers=2), tmp_path / "api.log")
    key = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {tenant.key}", "Idempotency-Key": key}

    def submit(_: int) -> requests.Response:
        return requests.post(api.url + "/v1/jobs", json=BODY, headers=headers, timeout=30)

    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(submit, range(20)))
    finally:
        api.stop()
    assert all(r.status_code in (200, 202) for r in answers), [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert jobs_of(engine, tenant) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(idempotency_keys).where(
            idempotency_keys.c.key == key)).scalar_one() == 1
