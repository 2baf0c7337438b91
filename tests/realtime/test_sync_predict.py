"""POST /v1/models/{name}/predict: submit, wait on the Redis wake-up, answer with the result."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
import requests

from service.models.registry import ModelInfo
from tests.support.tenants import Tenant

pytestmark = pytest.mark.usefixtures("worker")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def test_sync_predict_answers_the_models_own_predictions_and_records_the_job(
    tenant: Tenant, models: dict[str, ModelInfo]
) -> None:
    response = tenant.post("/v1/models/iris/predict", json={"inputs": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    model = joblib.load(models["iris"].artifact_path)
    assert body["predictions"] == model.predict(np.array(ROWS)).tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(np.array(ROWS)))
    assert (body["model"], body["version"], body["sha256"]) == ("iris", "1",
                                                                models["iris"].sha256)
    # The same body as GET /v1/jobs/{id}/result, which Content-Location names.
    location = response.headers["Content-Location"]
    assert tenant.get(location).json() == body
    job = tenant.get(location.removesuffix("/result")).json()
    assert job["status"] == "succeeded" and job["priority"] == "interactive"
    assert job["attempts"] == 1 and job["from_cache"] is False
    assert job["deadline"] is not None  # the timeout is the job's deadline


def test_regressor_keyed_inputs_and_an_explicit_version(
    tenant: Tenant, models: dict[str, ModelInfo]
) -> None:
    info = models["diabetes"]
    rows = np.random.default_rng(3).normal(scale=0.05, size=(2, 10)).round(4)
    keyed = [dict(zip(info.feature_names, map(float, row), strict=True)) for row in rows]
    response = tenant.post("/v1/models/diabetes/predict?timeout=10",
                           json={"inputs": keyed, "version": "1"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"],
                               joblib.load(info.artifact_path).predict(rows), rtol=1e-9)


def test_many_waiting_requests_each_get_their_own_answer(
    tenant: Tenant, models: dict[str, ModelInfo]
) -> None:
    rows = [[4.0 + i / 20, 3.0, 1.0 + i / 12, 0.1 + i / 30] for i in range(80)]

    def one(row: list[float]) -> requests.Response:
        with requests.Session() as http:  # one connection per caller, as separate clients
            return http.post(f"{tenant.base_url}/v1/models/iris/predict?timeout=20",
                             json={"inputs": [row]}, headers=tenant.http.headers, timeout=30)

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(one, rows))
    assert [a.status_code for a in answers] == [200] * len(rows)
    expected = joblib.load(models["iris"].artifact_path).predict(np.array(rows)).tolist()
    assert [a.json()["predictions"][0] for a in answers] == expected


def test_timeout_answers_202_and_the_job_then_succeeds_exactly_once(tenant: Tenant) -> None:
    # sleepy's feature 0 is milliseconds to sleep: the worker starts it at once, and takes 1.5 s.
    started = time.monotonic()
    response = tenant.post("/v1/models/sleepy/predict?timeout=0.5",
                           json={"inputs": [[1500, 1]]})
    waited = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert waited < 1.4  # it answered at its timeout, not when the job finished
    body = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{body['id']}"
    job = tenant.wait(body["id"])
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1  # claimed once: the 202 did not cause a second run
    result = tenant.get(f"/v1/jobs/{body['id']}/result").json()
    assert result["predictions"] == pytest.approx([1500 + 2])


def test_a_retry_with_the_same_idempotency_key_waits_for_the_first_job(
    tenant: Tenant,
) -> None:
    """A caller whose connection broke after the commit retries with its key: it gets the
    first attempt's job (202 while it runs, then its result), never a second job."""
    key = {"Idempotency-Key": f"sync-{tenant.name}"}
    body = {"inputs": [[1200, 1]]}  # sleepy: 1.2 s of work
    first = tenant.post("/v1/models/sleepy/predict?timeout=0.2", json=body, headers=key)
    assert first.status_code == 202, first.text  # (the caller never saw this answer)
    job_id = first.json()["id"]
    again = tenant.post("/v1/models/sleepy/predict?timeout=0.2", json=body, headers=key)
    assert again.status_code == 202 and again.json()["id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    done = tenant.post("/v1/models/sleepy/predict?timeout=10", json=body, headers=key)
    assert done.status_code == 200, done.text
    assert done.headers["Idempotent-Replayed"] == "true"
    assert done.headers["Content-Location"] == f"/v1/jobs/{job_id}/result"
    assert done.json()["predictions"] == pytest.approx([1200 + 2])
    listed = [j["id"] for j in tenant.get("/v1/jobs").json()["jobs"]]
    assert listed == [job_id]  # one job for three requests
    other = tenant.post("/v1/models/sleepy/predict", json={"inputs": [[1, 1]]}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["job_id"] == job_id


def test_a_failing_row_answers_422_with_the_job_id(tenant: Tenant) -> None:
    response = tenant.post("/v1/models/fragile/predict", json={"inputs": [[-1, 1, 1, 1]]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "prediction_failed" and "prediction failed" in error["message"]
    assert tenant.get(f"/v1/jobs/{error['job_id']}").json()["status"] == "failed"


@pytest.mark.parametrize(
    ("query", "body", "status", "field"),
    [
        ("?timeout=0", {"inputs": ROWS}, 400, "timeout"),
        ("?timeout=abc", {"inputs": ROWS}, 400, "timeout"),
        ("?timeout=nan", {"inputs": ROWS}, 400, "timeout"),
        ("?timeout=3600", {"inputs": ROWS}, 400, "timeout"),
        ("", {"inputs": ROWS, "model": "iris"}, 400, "model"),
        ("", {}, 400, "inputs"),
        ("", {"inputs": [[1, 2]]}, 400, "inputs[0]"),
        ("", {"inputs": ROWS, "version": "9"}, 404, "version"),
    ],
)
def test_bad_requests_answer_a_json_error_naming_the_field(
    tenant: Tenant, query: str, body: dict[str, object], status: int, field: str
) -> None:
    response = tenant.post(f"/v1/models/iris/predict{query}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


def test_unknown_model_and_missing_key(tenant: Tenant) -> None:
    response = tenant.post("/v1/models/nope/predict", json={"inputs": ROWS})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    anonymous = requests.post(f"{tenant.base_url}/v1/models/iris/predict",
                              json={"inputs": ROWS}, timeout=10)
    assert anonymous.status_code == 401
