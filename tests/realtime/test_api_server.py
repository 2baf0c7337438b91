"""`predq api` (gunicorn) holds many waiting synchronous requests without starving the rest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from service.core.settings import Settings
from tests.support.processes import ApiProcess, free_port
from tests.support.tenants import Tenant

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def gunicorn(settings: Settings, tmp_path: Path) -> Iterator[str]:
    api = ApiProcess(settings.replace(port=free_port()), tmp_path / "api.log")
    yield api.url
    api.stop()


def test_many_waiting_sync_requests_do_not_block_other_requests(
    gunicorn: str, tenant: Tenant,
) -> None:
    headers = dict(tenant.http.headers)
    n = 80  # more than any thread pool predq would configure

    def wait_for_answer(_: int) -> tuple[int, float]:
        response = requests.post(f"{gunicorn}/v1/models/sleepy/predict?timeout=20",
                                 json={"inputs": [[2500, 1]]}, headers=headers, timeout=30)
        return response.status_code, time.monotonic()

    with ThreadPoolExecutor(n) as pool:
        waiting = [pool.submit(wait_for_answer, i) for i in range(n)]
        time.sleep(0.5)  # every request is in, each waiting for a prediction that takes 2.5 s
        health = requests.get(f"{gunicorn}/healthz", timeout=30)
        submitted = requests.post(f"{gunicorn}/v1/jobs", headers=headers, timeout=30,
                                  json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]})
        answered_others = time.monotonic()
        results = [f.result() for f in waiting]
    assert health.status_code == 200 and submitted.status_code == 202
    assert [status for status, _ in results] == [200] * n
    # The other requests were answered while all the synchronous ones were still waiting.
    assert answered_others < min(done for _, done in results)
