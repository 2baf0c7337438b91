"""Submit over real HTTP, a real worker process predicts, poll until done."""

import time
import uuid

import joblib
import numpy as np
import pytest

from service.models.registry import ModelInfo
from tests.support.processes import WorkerProcess
from tests.support.tenants import Tenant

pytestmark = pytest.mark.usefixtures("worker")


def test_submitted_job_is_accepted_at_once_and_its_result_matches_the_model(
    tenant: Tenant, models: dict[str, ModelInfo]
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    response = tenant.post("/v1/jobs", json={"model": "iris", "inputs": rows})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert uuid.UUID(body["id"]).version == 4  # 122 random bits: not guessable
    assert response.headers["Location"] == body["links"]["self"] == f"/v1/jobs/{body['id']}"

    job = tenant.wait(body["id"])
    assert job["status"] == "succeeded", job
    assert job["rows"] == 3 and job["attempts"] == 1
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]

    result = tenant.get(body["links"]["result"]).json()
    model = joblib.load(models["iris"].artifact_path)
    assert result["predictions"] == model.predict(np.array(rows)).tolist()
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(np.array(rows)))
    assert (result["model"], result["version"]) == ("iris", "1")
    assert result["sha256"] == models["iris"].sha256


def test_regressor_with_inputs_keyed_by_feature_name(
    tenant: Tenant, models: dict[str, ModelInfo]
) -> None:
    info = models["diabetes"]
    rows = np.random.default_rng(7).normal(scale=0.05, size=(4, 10)).round(4)
    keyed = [dict(zip(info.feature_names, map(float, row), strict=True)) for row in rows]
    job_id = tenant.submit("diabetes", keyed, version="1")
    assert tenant.wait(job_id)["status"] == "succeeded"
    result = tenant.get(f"/v1/jobs/{job_id}/result").json()
    assert "probabilities" not in result
    np.testing.assert_allclose(result["predictions"],
                               joblib.load(info.artifact_path).predict(rows), rtol=1e-9)


def test_many_concurrent_jobs_all_finish_with_their_own_results(
    tenant: Tenant, models: dict[str, ModelInfo]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rows = [[4.0 + i / 20, 3.0, 1.0 + i / 12, 0.1 + i / 30] for i in range(60)]
    with ThreadPoolExecutor(12) as pool:  # concurrent submits share group commits and batches
        ids = list(pool.map(lambda row: tenant.submit("iris", [row]), rows))
    assert len(set(ids)) == 60
    expected = joblib.load(models["iris"].artifact_path).predict(np.array(rows)).tolist()
    assert len(set(expected)) == 3  # the rows span every class, so a mix-up would show
    for job_id, label in zip(ids, expected, strict=True):
        assert tenant.wait(job_id)["status"] == "succeeded"
        assert tenant.get(f"/v1/jobs/{job_id}/result").json()["predictions"] == [label]


def test_a_failing_row_fails_its_job_with_a_clear_error(tenant: Tenant) -> None:
    bad = tenant.submit("fragile", [[5.1, -3.5, 1.4, 0.2]])
    good = tenant.submit("fragile", [[5.1, 3.5, 1.4, 0.2]])
    failed = tenant.wait(bad)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("prediction failed at inputs[0]: ValueError")
    assert tenant.wait(good)["status"] == "succeeded"
    response = tenant.get(f"/v1/jobs/{bad}/result")
    assert response.status_code == 409
    assert response.json()["error"]["status"] == "failed"


def test_redelivered_message_through_the_worker_leaves_one_result(
    tenant: Tenant, worker: WorkerProcess, settings
) -> None:  # type: ignore[no-untyped-def]
    from service.core.messaging import PREDICT_TASK
    from workers.app import make_celery

    job_id = tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2]])
    before = tenant.wait(job_id)
    result = tenant.get(f"/v1/jobs/{job_id}/result").json()
    celery = make_celery(settings)
    celery.send_task(PREDICT_TASK, args=[[job_id]], queue="predict.interactive")
    celery.send_task(PREDICT_TASK, args=[[job_id, job_id]], queue="predict.interactive")
    deadline = time.monotonic() + 20
    while job_id not in worker.output():  # the worker logs the ids it skipped as finished
        assert time.monotonic() < deadline, worker.output()[-2000:]
        time.sleep(0.05)
    assert tenant.get(f"/v1/jobs/{job_id}").json() == before
    assert tenant.get(f"/v1/jobs/{job_id}/result").json() == result
    assert before["attempts"] == 1
    celery.close()
