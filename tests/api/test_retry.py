"""POST /v1/jobs/{id}/retry: a new job with the original's stored inputs, options and model
version, its view naming the original; run by a real worker on SQLite or PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, delete, select

from service.core.settings import Settings
from service.jobs import lifecycle
from service.jobs.lifecycle import NewJob
from service.models.registry import ModelInfo, add_model
from service.store.db import job_chunks, jobs, models
from service.tenants import keys
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.support.dataroot import tenant_home
from tests.support.processes import WorkerProcess
from tests.support.tenants import Tenant

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def retry(tenant: Tenant, job_id: str, status: int = 202, **body: Any) -> dict[str, Any]:
    answer = tenant.post(f"/v1/jobs/{job_id}/retry", json=body) if body else \
        tenant.post(f"/v1/jobs/{job_id}/retry")
    assert answer.status_code == status, answer.text
    return answer.json()  # type: ignore[no-any-return]


def upload(tenant: Tenant, rows: np.ndarray, names: list[str], **query: str) -> str:
    answer = tenant.post("/v1/jobs", params={"model": "iris", **query},
                         data=as_csv(rows, names), headers={"Content-Type": "text/csv"})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_a_failed_job_retried_runs_the_same_rows_again_and_names_the_original(
    worker: WorkerProcess, tenant: Tenant
) -> None:
    failed = tenant.submit("fragile", [[5.1, -3.5, 1.4, 0.2]], priority="interactive")
    first = tenant.wait(failed)
    assert first["status"] == "failed"
    accepted = retry(tenant, failed)
    assert accepted["id"] != failed and accepted["status"] == "queued"
    again = tenant.wait(accepted["id"])
    assert again["retry_of"] == failed and again["priority"] == "interactive"
    assert (again["status"], again["error"]) == ("failed", first["error"])  # the same row
    assert tenant.get(f"/v1/jobs/{failed}").json()["retry_of"] is None


def test_a_cancelled_job_retried_succeeds_with_the_same_predictions(
    worker: WorkerProcess, tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    with engine.begin() as conn:  # committed, never published: it waits until cancelled
        [original] = lifecycle.insert_jobs(conn, [NewJob(tenant.name, models["iris"].id,
                                                         np.array(ROWS)).with_id()])
    assert tenant.post(f"/v1/jobs/{original}/cancel").status_code == 200
    accepted = retry(tenant, original)
    assert tenant.wait(accepted["id"])["status"] == "succeeded"
    direct = tenant.wait(tenant.submit("iris", ROWS))
    assert tenant.get(f"/v1/jobs/{accepted['id']}/result").json()["predictions"] == \
        tenant.get(f"/v1/jobs/{direct['id']}/result").json()["predictions"]


def test_only_an_ended_job_with_its_inputs_can_be_retried(
    worker: WorkerProcess, tenant: Tenant, other_tenant: Tenant, engine: Engine,
    models: dict[str, ModelInfo], api_url: str
) -> None:
    with engine.begin() as conn:
        [queued] = lifecycle.insert_jobs(conn, [NewJob(tenant.name, models["iris"].id,
                                                       np.array(ROWS)).with_id()])
    running = retry(tenant, queued, 409)["error"]
    assert running["code"] == "conflict" and "still queued" in running["message"]
    assert retry(tenant, str(uuid.uuid4()), 404)["error"]["code"] == "job_not_found"
    assert retry(other_tenant, queued, 404)["error"]["code"] == "job_not_found"

    iris = models["iris"]
    plain = upload(tenant, iris_rows(50, seed=3), iris.feature_names)
    assert tenant.wait(plain)["status"] == "succeeded"
    gone = retry(tenant, plain, 409)["error"]
    assert gone["code"] == "inputs_not_kept" and "keep_inputs=true" in gone["message"]

    with engine.begin() as conn:
        reader = keys.create_key(conn, tenant.name, ("read",))
    refused = tenant.http.post(f"{api_url}/v1/jobs/{plain}/retry", timeout=30,
                               headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403
    odd = tenant.post(f"/v1/jobs/{plain}/retry", json={"priority": "bulk"})
    assert odd.status_code == 400 and odd.json()["error"]["field"] == "priority"


def test_a_bulk_upload_that_kept_its_inputs_is_retried_chunk_for_chunk(
    worker: WorkerProcess, tenant: Tenant, engine: Engine, models: dict[str, ModelInfo]
) -> None:
    iris = models["iris"]
    original = upload(tenant, iris_rows(3000, seed=5), iris.feature_names, keep_inputs="true")
    assert tenant.wait(original)["status"] == "succeeded"
    accepted = retry(tenant, original)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    assert tenant.post(f"/v1/jobs/{original}/retry", headers=key).status_code == 202
    replay = tenant.post(f"/v1/jobs/{original}/retry", headers=key)
    assert replay.status_code == 200  # the same key: the same retry
    job = tenant.wait(accepted["id"])
    assert (job["status"], job["retry_of"], job["priority"], job["rows_total"]) == \
        ("succeeded", original, "bulk", 3000)
    results = [tenant.get(f"/v1/jobs/{i}/result").json()["predictions"]
               for i in (original, accepted["id"])]
    assert results[0] == results[1]
    with engine.connect() as conn:  # it keeps its inputs too: it can be retried in turn
        assert conn.execute(select(jobs.c.keep_inputs).where(jobs.c.id == accepted["id"])
                            ).scalar() is True
        assert conn.execute(select(job_chunks.c.inputs).where(
            job_chunks.c.job_id == accepted["id"])).scalars().all()[0] is not None
    page = tenant.get(f"/v1/jobs/{accepted['id']}/overview").json()
    assert page["input"]["source"] == "upload" and page["input"]["format"] == "csv"


def test_a_job_by_reference_is_retried_on_the_same_file_and_rewrites_its_output(
    worker: WorkerProcess, tenant: Tenant, settings: Settings
) -> None:
    for here in tenant_home(settings, tenant.name):
        np.save(here / "rows.npy", iris_rows(700, seed=9))
        answer = tenant.post("/v1/jobs", json={"model": "iris", "input": "rows.npy",
                                               "output": "preds.csv"})
        assert answer.status_code == 202, answer.text
        original = answer.json()["id"]
        assert tenant.wait(original)["status"] == "succeeded"
        written = (here / "preds.csv").read_text()
        (here / "preds.csv").unlink()
        accepted = retry(tenant, original)
        job = tenant.wait(accepted["id"])
        assert (job["status"], job["retry_of"], job["rows_total"]) == ("succeeded", original, 700)
        assert (here / "preds.csv").read_text() == written  # the same file, written again
        page = tenant.get(f"/v1/jobs/{accepted['id']}/overview").json()
        assert page["input"] == {"source": "file", "format": "npy", "rows": 700, "columns": 4}
        assert tenant.get(f"/v1/jobs/{original}/result").json()["predictions"] == \
            tenant.get(f"/v1/jobs/{accepted['id']}/result").json()["predictions"]


@pytest.fixture
def flowers(tenant: Tenant, engine: Engine, settings: Settings,
            models: dict[str, ModelInfo]) -> Iterator[str]:
    """A model of its own with versions 1 and 2 (iris) and 3 (diabetes: other features)."""
    name = f"flowers-{uuid.uuid4().hex[:8]}"
    iris, diabetes = models["iris"].artifact_path, models["diabetes"].artifact_path
    with engine.begin() as conn:
        for version, path in (("1", iris), ("2", iris), ("3", diabetes)):
            add_model(conn, settings.model_dir, path, name, version)
    yield name
    with engine.begin() as conn:  # its jobs first (the tenant's clean-up comes after this)
        ids = select(models_table.c.id).where(models_table.c.name == name)
        owned = select(jobs.c.id).where(jobs.c.model_id.in_(ids))
        conn.execute(delete(job_chunks).where(job_chunks.c.job_id.in_(owned)))
        conn.execute(delete(jobs).where(jobs.c.model_id.in_(ids)))
        # The models' rows stay: SQLite would give their ids to the next models, which a
        # worker that knew these would take for them (a version's metadata is cached for good).


models_table = models


def test_a_retry_keeps_the_original_s_version_unless_it_names_another(
    worker: WorkerProcess, tenant: Tenant, flowers: str
) -> None:
    original = tenant.submit(flowers, ROWS, version="1")
    assert tenant.wait(original)["status"] == "succeeded"
    same = retry(tenant, original)
    assert same["version"] == "1"  # not the latest, 3
    newer = retry(tenant, original, version="2")
    assert newer["version"] == "2" and tenant.wait(newer["id"])["status"] == "succeeded"
    wrong = retry(tenant, original, 400, version="3")["error"]
    assert wrong["field"] == "version" and "(10 features) than 1 (4 features)" in \
        wrong["message"]
