"""Key scopes, expiry and revocation, over HTTP and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.support.processes import ROOT, ApiProcess, free_port
from tests.support.tenants import Tenant, make_tenant

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def admin(engine: Engine, api_url: str, models: dict[str, ModelInfo]) -> Iterator[Tenant]:
    yield from make_tenant(engine, api_url, ("submit", "read", "admin"))


def key_session(tenant: Tenant, key: str) -> Tenant:
    return Tenant(tenant.name, key, tenant.base_url)


def make_key(admin: Tenant, **body: object) -> dict[str, object]:
    response = admin.post("/v1/keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_read_key_reads_but_cannot_submit_or_cancel(admin: Tenant) -> None:
    job_id = admin.submit("iris", [ROW])
    reader = key_session(admin, str(make_key(admin, scopes=["read"])["key"]))
    assert reader.get(f"/v1/jobs/{job_id}").status_code == 200
    assert reader.get("/v1/jobs?limit=1").status_code == 200
    for response in (reader.post("/v1/jobs", json={"model": "iris", "inputs": [ROW]}),
                     reader.post(f"/v1/jobs/{job_id}/cancel"),
                     reader.post("/v1/models/iris/predict", json={"inputs": [ROW]})):
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "forbidden"
        assert "'submit' scope" in error["message"]


def test_a_submit_key_submits_but_cannot_read_results(admin: Tenant, worker: object) -> None:
    writer = key_session(admin, str(make_key(admin, scopes=["submit"])["key"]))
    job_id = writer.submit("iris", [ROW])
    assert writer.get(f"/v1/jobs/{job_id}").status_code == 403
    assert admin.wait(job_id)["status"] == "succeeded"  # the same tenant's reader sees it


def test_key_management_needs_the_admin_scope(tenant: Tenant) -> None:
    for response in (tenant.get("/v1/keys"), tenant.post("/v1/keys", json={}),
                     tenant.delete(f"/v1/keys/{tenant.key[:10]}")):
        assert response.status_code == 403, response.text
        assert "'admin' scope" in response.json()["error"]["message"]
    assert tenant.get("/v1/jobs?limit=1").status_code == 200  # the key itself still works


def test_admins_list_create_and_revoke_their_tenants_keys_only(
    admin: Tenant, tenant: Tenant
) -> None:
    made = make_key(admin, name="nightly scheduler", scopes=["submit", "read"])
    assert str(made["key"]).startswith(str(made["prefix"]))
    listed = admin.get("/v1/keys").json()["keys"]
    assert {k["prefix"] for k in listed} == {admin.key[:10], made["prefix"]}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    mine = next(k for k in listed if k["prefix"] == made["prefix"])
    assert mine["name"] == "nightly scheduler" and mine["status"] == "active"
    assert mine["scopes"] == ["submit", "read"] and mine["expires_at"] is None
    # Another tenant's key looks exactly like a missing one.
    theirs = admin.delete(f"/v1/keys/{tenant.key[:10]}")
    missing = admin.delete("/v1/keys/pq_nothere")
    assert theirs.status_code == missing.status_code == 404
    assert tenant.get("/v1/jobs?limit=1").status_code == 200
    revoked = admin.delete(f"/v1/keys/{made['prefix']}")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    response = key_session(admin, str(made["key"])).get("/v1/jobs?limit=1")
    assert response.status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"scopes": ["root"]}, "scopes"), ({"scopes": []}, "scopes"), ({"scopes": "read"}, "scopes"),
    ({"expires_in": -5}, "expires_in"), ({"expires_in": "soon"}, "expires_in"),
    ({"expires_in": 1e12}, "expires_in"), ({"name": "x" * 101}, "name"), ({"name": 7}, "name"),
    ({"name": "a\u0000b"}, "name"),
    ({"owner": "me"}, "owner"),
])
def test_bad_key_requests_name_the_field(admin: Tenant, body: dict[str, object],
                                         field: str) -> None:
    response = admin.post("/v1/keys", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_an_expired_key_stops_working_though_the_api_cached_it(admin: Tenant) -> None:
    made = make_key(admin, expires_in=1.5)
    session = key_session(admin, str(made["key"]))
    assert session.get("/v1/jobs?limit=1").status_code == 200  # cached by the API process now
    deadline = time.monotonic() + 30
    while (response := session.get("/v1/jobs?limit=1")).status_code == 200:
        assert time.monotonic() < deadline, "the key never expired"
        time.sleep(0.2)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "this API key has expired"
    listed = {k["prefix"]: k for k in admin.get("/v1/keys").json()["keys"]}
    assert listed[made["prefix"]]["status"] == "expired"


def test_revocation_reaches_every_api_process_at_once(
    settings: Settings, admin: Tenant, tmp_path: Path
) -> None:
    api = ApiProcess(settings.replace(port=free_port(), api_workers=2), tmp_path / "api.log")
    try:
        made = make_key(admin)
        headers = {"Authorization": f"Bearer {made['key']}"}
        for _ in range(20):  # both gunicorn processes answer some: both cache the key
            assert requests.get(api.url + "/v1/jobs?limit=1", headers=headers, timeout=10).ok
        assert admin.delete(f"/v1/keys/{made['prefix']}").status_code == 200
        codes = {requests.get(api.url + "/v1/jobs?limit=1", headers=headers, timeout=10).status_code
                 for _ in range(20)}
        assert codes == {401}
    finally:
        api.stop()


def test_a_revoked_key_is_refused_by_every_api_process_once_the_revoke_returns(
    settings: Settings, admin: Tenant, tmp_path: Path
) -> None:
    """API processes trust their cached keys for the epoch check interval (here 2 s, so the
    window cannot close by itself between the revoke and the next request): the revoke,
    over HTTP or on the command line, returns only once every process has had to read the
    revocation."""
    slow = settings.replace(port=free_port(), api_workers=2, key_epoch_check_interval=2.0)
    api = ApiProcess(slow, tmp_path / "api.log")
    try:
        made = make_key(admin)
        assert accepted(api.url, made) == {200}  # both gunicorn processes cache the key
        revoked = requests.delete(f"{api.url}/v1/keys/{made['prefix']}", timeout=10,
                                  headers={"Authorization": f"Bearer {admin.key}"})
        assert revoked.status_code == 200
        assert accepted(api.url, made) == {401}
        # The command line: the key is cached again just before the revoke is sent.
        made = make_key(admin)
        revoke = subprocess.Popen(predq_command(slow, "keys", "revoke", str(made["prefix"])),
                                  env=predq_env(slow), stdout=subprocess.PIPE, text=True)
        while revoke.poll() is None:
            accepted(api.url, made)
        assert revoke.returncode == 0 and "revoked 1 key" in str(revoke.stdout.read())
        assert accepted(api.url, made) == {401}
    finally:
        api.stop()


def accepted(url: str, made: dict[str, object]) -> set[int]:
    """The status codes of 20 requests with the key (both API processes answer some)."""
    headers = {"Authorization": f"Bearer {made['key']}"}
    return {requests.get(url + "/v1/jobs?limit=1", headers=headers, timeout=10).status_code
            for _ in range(20)}


def predq_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}


def predq_command(settings: Settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def predq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(predq_command(settings, *args), env=predq_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_keys_list_create_and_revoke_from_the_command_line(settings: Settings,
                                                           api_url: str) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    made = predq(settings, "keys", "create", "--tenant", tenant, "--scopes", "read",
                 "--expires-in", "30d", "--name", "dashboards")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert requests.get(api_url + "/v1/jobs?limit=1", headers=headers, timeout=10).ok
    assert requests.post(api_url + "/v1/jobs", headers=headers, timeout=10,
                         json={"model": "iris", "inputs": [ROW]}).status_code == 403
    listed = predq(settings, "keys", "list", "--tenant", tenant)
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["prefix", "tenant", "scopes", "status", "created",
                                    "expires", "name"]
    fields = lines[1].split("\t")
    assert fields[:4] == [key[:10], tenant, "read", "active"] and fields[-1] == "dashboards"
    assert key not in listed.stdout
    assert predq(settings, "keys", "revoke", key[:10]).returncode == 0
    answer = requests.get(api_url + "/v1/jobs?limit=1", headers=headers, timeout=10)
    assert answer.status_code == 401
    assert len(predq(settings, "keys", "list", "--tenant", tenant).stdout.splitlines()) == 1
    shown = predq(settings, "keys", "list", "--tenant", tenant, "--all").stdout
    assert "\trevoked\t" in shown
    bad = predq(settings, "keys", "create", "--tenant", tenant, "--scopes", "root")
    assert bad.returncode != 0 and "scopes" in bad.stderr
