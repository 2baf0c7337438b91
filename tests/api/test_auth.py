"""API keys and tenant isolation over HTTP."""

import uuid

import pytest
import requests

from tests.conftest import Tenant


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


def test_revoked_key_stops_working_at_once(tenant: Tenant, engine) -> None:  # type: ignore[no-untyped-def]
    from service.keys import revoke_key

    assert tenant.get("/v1/models").status_code == 200
    with engine.begin() as conn:
        revoke_key(conn, tenant.key[:10])
    assert tenant.get("/v1/models").status_code == 401
