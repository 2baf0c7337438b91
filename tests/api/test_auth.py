"""API keys and tenant isolation over HTTP."""

import os
import subprocess
import sys
import uuid

import pytest
import requests
from sqlalchemy import delete

from service.core.settings import Settings
from service.store.db import api_keys
from tests.support.processes import ROOT
from tests.support.tenants import Tenant


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer pq_not-a-key", "Basic dXNlcjpwYXNz"])
def test_requests_without_a_valid_key_answer_401(api_url: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in [("POST", "/v1/jobs"), ("GET", f"/v1/jobs/{uuid.uuid4()}"),
                         ("GET", "/v1/models")]:
        response = requests.request(method, api_url + path, headers=headers, timeout=10,
                                    json={"model": "iris", "inputs": [[1, 2, 3, 4]]})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_another_tenants_job_looks_exactly_like_an_unknown_one(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    job_id = tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2]])
    assert tenant.get(f"/v1/jobs/{job_id}").status_code == 200
    unknown = str(uuid.uuid4())
    for suffix in ("", "/result"):
        theirs = other_tenant.get(f"/v1/jobs/{job_id}{suffix}")
        missing = other_tenant.get(f"/v1/jobs/{unknown}{suffix}")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "job_not_found"
        assert theirs.json()["error"]["message"].replace(job_id, unknown) == \
            missing.json()["error"]["message"]


def test_revoked_key_stops_working_at_once_though_the_api_caches_keys(
    tenant: Tenant, settings: Settings
) -> None:
    assert tenant.get("/v1/models").status_code == 200  # now cached by the API process
    env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}
    revoked = subprocess.run([sys.executable, "-m", "service.cli", "keys", "revoke",
                              tenant.key[:10]], env=env, capture_output=True, text=True,
                             timeout=60)
    assert revoked.stdout.strip() == "revoked 1 key(s)", revoked.stderr
    response = tenant.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_without_redis_keys_are_checked_in_sql(settings: Settings, engine, live_server,
                                              tmp_path) -> None:  # type: ignore[no-untyped-def]
    from service.tenants.keys import create_key, revoke_key

    server = live_server(settings.replace(redis_url=f"unix://{tmp_path}/no-redis.sock"))
    with engine.begin() as conn:
        key = create_key(conn, "no-redis")
    headers = {"Authorization": f"Bearer {key}"}
    try:
        assert requests.get(server.url + "/v1/models", headers=headers, timeout=10).ok
        with engine.begin() as conn:
            revoke_key(conn, key[:10])  # no announcement can reach it: SQL is asked every time
        response = requests.get(server.url + "/v1/models", headers=headers, timeout=10)
        assert response.status_code == 401
    finally:
        with engine.begin() as conn:
            conn.execute(delete(api_keys).where(api_keys.c.tenant == "no-redis"))
