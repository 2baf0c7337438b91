"""Cancel and deadlines: a cancelled or expired job never gets a result, whoever holds it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.realtime.conftest import SETOSA, Stack, occupy, until
from tests.support.tenants import Tenant


def _job(tenant: Tenant, job_id: str) -> dict[str, object]:
    return tenant.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]


def test_cancel_wins_over_a_worker_already_holding_the_message(
    stack: Callable[..., Stack],
) -> None:
    s = stack()
    s.start_worker()
    tenant = s.tenant()
    sleepers = occupy(s, tenant, 6000)  # long enough for a loaded machine
    held = tenant.submit("iris", [SETOSA])
    later = tenant.submit("iris", [SETOSA])
    until(lambda: s.redis_queue_length("predict.normal") == 0,
          what="the worker to take the messages")  # the worker holds them, unclaimed
    response = tenant.http.delete(f"{tenant.base_url}/v1/jobs/{held}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    for job_id in [*sleepers, later]:  # `later` ran after `held` had its turn
        assert tenant.wait(job_id)["status"] == "succeeded"
    job = _job(tenant, held)
    assert job["status"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None
    result = tenant.get(f"/v1/jobs/{held}/result")
    assert result.status_code == 409 and result.json()["error"]["status"] == "cancelled"


def test_cancelling_a_running_job_discards_its_result(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.start_worker()
    tenant = s.tenant()
    job_id = tenant.submit("sleepy", [[1500, 0]])
    until(lambda: _job(tenant, job_id)["status"] == "running", what="the job to start")
    response = tenant.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    # Its worker finishes the prediction and tries to write it; a later job proves it got there.
    time.sleep(1.6)
    assert tenant.wait(tenant.submit("iris", [SETOSA]))["status"] == "succeeded"
    job = _job(tenant, job_id)
    assert job["status"] == "cancelled" and job["attempts"] == 1
    assert tenant.get(f"/v1/jobs/{job_id}/result").status_code == 409


def test_cancel_answers_409_once_finished_and_404_for_unknown_or_foreign_jobs(
    stack: Callable[..., Stack],
) -> None:
    s = stack()
    s.start_worker()
    tenant, other = s.tenant(), s.tenant()
    done = tenant.submit("iris", [SETOSA])
    assert tenant.wait(done)["status"] == "succeeded"
    conflict = tenant.post(f"/v1/jobs/{done}/cancel")
    assert conflict.status_code == 409
    assert "already succeeded" in conflict.json()["error"]["message"]
    assert tenant.post("/v1/jobs/no-such-job/cancel").status_code == 404
    foreign = other.post(f"/v1/jobs/{done}/cancel")
    assert foreign.status_code == 404
    assert foreign.json() == other.post("/v1/jobs/no-such-job/cancel").json() | {
        "error": {**foreign.json()["error"]}}
    assert foreign.json()["error"]["code"] == "job_not_found"


def test_a_job_not_started_by_its_deadline_expires_and_never_runs(
    stack: Callable[..., Stack],
) -> None:
    s = stack()
    s.start_worker()
    tenant = s.tenant()
    sleepers = occupy(s, tenant, 2000)
    late = tenant.submit("iris", [SETOSA], deadline=0.5)
    in_time = tenant.submit("iris", [SETOSA],
                            deadline=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    for job_id in [*sleepers, in_time]:
        assert tenant.wait(job_id)["status"] == "succeeded"
    job = tenant.wait(late)
    assert job["status"] == "expired", job
    assert job["attempts"] == 0 and job["started_at"] is None
    assert "deadline" in str(job["error"])
    assert str(_job(tenant, in_time)["deadline"]).endswith("Z")


def test_the_reconciler_expires_a_job_whose_message_never_came(
    stack: Callable[..., Stack],
) -> None:
    s = stack()  # no worker: the message stays in Redis
    tenant = s.tenant()
    job_id = tenant.submit("iris", [SETOSA], deadline=0.2)
    time.sleep(0.3)
    assert s.reconcile()["expired"] == 1
    assert _job(tenant, job_id)["status"] == "expired"
    s.start_worker()  # the old message arrives: nothing runs
    assert tenant.wait(tenant.submit("iris", [SETOSA]))["status"] == "succeeded"
    assert _job(tenant, job_id)["attempts"] == 0
