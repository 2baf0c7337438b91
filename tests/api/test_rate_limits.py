"""Per-tenant rate limits: requests per second and rows per minute, shared through Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from sqlalchemy import Engine

from service.core.settings import Settings
from service.tenants import limits as ratelimit
from tests.support.processes import ROOT, ApiProcess, free_port
from tests.support.tenants import Tenant

ROW = [5.1, 3.5, 1.4, 0.2]


def limit(engine: Engine, tenant: Tenant, rps: float | None, rows: int | None) -> None:
    with engine.begin() as conn:
        ratelimit.set_limits(conn, tenant.name, rps, rows)
    time.sleep(2.1)  # API processes re-read a tenant's limits every 2 s


def test_a_tenant_over_its_request_rate_gets_429_and_others_do_not_notice(
    engine: Engine, tenant: Tenant, other_tenant: Tenant, worker: object
) -> None:
    limit(engine, tenant, 2, None)
    started = time.monotonic()
    answers = [tenant.get("/v1/jobs?limit=1") for _ in range(12)]
    elapsed = time.monotonic() - started
    codes = [r.status_code for r in answers]
    assert set(codes) == {200, 429}, codes
    # A sliding window of one second: at most 2 per second started, plus one window's worth.
    assert codes.count(200) <= 2 * (elapsed + 2)
    refused = next(r for r in answers if r.status_code == 429)
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "2 per 1 second" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert "X-Request-ID" in refused.headers
    # The other tenant, at the same moment, is not limited at all and its jobs run.
    ids = [other_tenant.submit("iris", [ROW]) for _ in range(10)]
    assert all(other_tenant.wait(i)["status"] == "succeeded" for i in ids)
    # Refused requests did nothing: the limited tenant's next allowed request works.
    deadline = time.monotonic() + 10
    while (r := tenant.post("/v1/jobs", json={"model": "iris", "inputs": [ROW]})).status_code \
            == 429:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert r.status_code == 202


def test_rows_per_minute_count_accepted_rows_and_refuse_jobs_that_never_fit(
    engine: Engine, tenant: Tenant
) -> None:
    limit(engine, tenant, None, 10)
    codes = [tenant.post("/v1/jobs", json={"model": "iris", "inputs": [ROW] * 3}).status_code
             for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    refused = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [ROW] * 2})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "10 rows per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    too_big = tenant.post("/v1/jobs", json={"model": "iris", "inputs": [ROW] * 11})
    assert too_big.status_code == 400 and too_big.json()["error"]["field"] == "inputs"
    assert "split the job" in too_big.json()["error"]["message"]
    # The synchronous endpoint counts rows too.
    sync = tenant.post("/v1/models/iris/predict", json={"inputs": [ROW] * 2})
    assert sync.status_code == 429


def test_limits_are_shared_by_every_api_process(
    settings: Settings, engine: Engine, tenant: Tenant, tmp_path: Path
) -> None:
    """Two gunicorn processes, one Redis count: 10 rows per minute in all, not per process."""
    with engine.begin() as conn:
        ratelimit.set_limits(conn, tenant.name, None, 10)
    api = ApiProcess(settings.replace(port=free_port(), api_workers=2), tmp_path / "api.log")
    headers = {"Authorization": f"Bearer {tenant.key}"}

    def submit(_: int) -> int:
        return requests.post(api.url + "/v1/jobs", headers=headers, timeout=30,
                             json={"model": "iris", "inputs": [ROW]}).status_code

    try:
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(submit, range(30)))
    finally:
        api.stop()
    # A sliding-window counter may let one more through if the run straddles a minute.
    assert 10 <= codes.count(202) <= 11, codes
    assert codes.count(429) == 30 - codes.count(202)


def test_limits_are_set_shown_and_cleared_from_the_command_line(settings: Settings) -> None:
    env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT),
           "PREDQ_RATE_LIMIT_RPS": "100"}

    def predq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "limits", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    assert predq("set", "cli-limits", "--rps", "5", "--rows-per-minute", "0").stdout.strip() \
        == "cli-limits: 5 requests/s, unlimited rows/minute, default retention"
    shown = predq("show").stdout.splitlines()
    assert shown[0] == "default: 100 requests/s, unlimited rows/minute, jobs kept 30 days"
    assert "cli-limits: 5 requests/s, unlimited rows/minute, default retention" in shown
    kept = predq("set", "cli-limits", "--retention", "7d").stdout.strip()
    assert kept == "cli-limits: 5 requests/s, unlimited rows/minute, jobs kept 7 days"
    bad = predq("set", "cli-limits", "--rps", "0.5")
    assert bad.returncode != 0 and "requests_per_second" in bad.stderr
    assert predq("clear", "cli-limits").stdout.strip() == "cli-limits: default limits"
    assert "cli-limits" not in predq("show").stdout
