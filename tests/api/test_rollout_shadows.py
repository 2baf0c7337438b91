"""A rollout's shadow on live traffic: every job keeps its own version, result and status
while the shadow version answers the same rows beside it (single jobs, and bulk jobs chunk by
chunk), and the comparison agrees with what the two models give on those rows. Real HTTP, a
real worker, SQLite or PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import job_chunks
from tests.support.processes import WorkerProcess
from tests.support.rollouts import (
    FEATURES,
    Versions,
    accepted,
    iris_rows,
    registered_regressors,
    set_rollout,
    shadow_of,
)
from tests.support.tenants import Tenant


def test_a_full_shadow_keeps_every_job_and_compare_agrees_with_the_models(
    versions: Versions, ops: Tenant, tenant: Tenant, worker: WorkerProcess
) -> None:
    set_rollout(ops, versions.name, {"weights": {"1": 100},
                                     "shadow": {"version": "2", "percent": 100}})
    sent = {}
    for seed in range(30):
        rows = iris_rows(1 + seed % 4, seed)
        job = accepted(tenant, {"model": versions.name, "inputs": rows})
        assert job["version"] == "1"
        sent[job["id"]] = rows
    for job_id, rows in sent.items():
        done = tenant.wait(job_id)
        assert (done["status"], done["version"]) == ("succeeded", "1")
        result = tenant.get(f"/v1/jobs/{job_id}/result").json()
        assert result["predictions"] == versions.predict("1", rows)
        assert result["version"] == "1"
    answers = {job_id: shadow_of(ops, job_id) for job_id in sent}
    for job_id, rows in sent.items():
        assert answers[job_id]["version"] == "2"
        assert answers[job_id]["result"]["predictions"] == versions.predict("2", rows)
    assert tenant.get(f"/v1/jobs/{next(iter(sent))}/shadow").status_code == 403
    all_rows = [row for rows in sent.values() for row in rows]
    same = sum(a == b for a, b in zip(versions.predict("1", all_rows),
                                      versions.predict("2", all_rows), strict=True))
    report = ops.get(f"/v1/models/{versions.name}/compare",
                     params={"baseline": "1", "candidate": "2"}).json()
    assert (report["jobs"], report["rows"]) == (len(sent), len(all_rows))
    assert report["agreement"] == pytest.approx(same / len(all_rows))
    assert 0 < report["agreement"] < 1  # the two models differ on some of these rows
    assert sum(n for row in report["confusion"].values() for n in row.values()) == len(all_rows)
    assert report["versions"]["1"]["failures"] == report["versions"]["2"]["failures"] == 0
    assert report["versions"]["2"]["latency_ms"]["p99"] is not None


def test_a_shadowed_bulk_job_is_compared_chunk_by_chunk(
    versions: Versions, ops: Tenant, tenant: Tenant, worker: WorkerProcess, engine: Engine
) -> None:
    set_rollout(ops, versions.name, {"weights": {"1": 100},
                                     "shadow": {"version": "2", "percent": 100}})
    rows = iris_rows(3000, 11)
    csv = "\n".join(",".join(map(str, row)) for row in [FEATURES, *rows]) + "\n"
    upload = tenant.post("/v1/jobs", params={"model": versions.name}, data=csv,
                         headers={"Content-Type": "text/csv"})
    assert upload.status_code == 202, upload.text
    job_id = upload.json()["id"]
    done = tenant.wait(job_id)
    assert (done["status"], done["version"]) == ("succeeded", "1")
    shadow = shadow_of(ops, job_id)
    assert shadow["status"] == "succeeded" and shadow["version"] == "2"
    assert shadow["chunks_answered"] == shadow["chunks"] >= 1
    with engine.connect() as conn:  # kept for the shadow, then dropped: it did not keep them
        held = conn.execute(select(func.count()).select_from(job_chunks).where(
            job_chunks.c.job_id == job_id, job_chunks.c.inputs.is_not(None))).scalar_one()
    assert held == 0
    result = tenant.get(f"/v1/jobs/{job_id}/result").json()
    assert result["predictions"] == versions.predict("1", rows)  # the job's own, untouched
    same = sum(a == b for a, b in zip(versions.predict("1", rows), versions.predict("2", rows),
                                      strict=True))
    report = ops.get(f"/v1/models/{versions.name}/compare",
                     params={"baseline": "1", "candidate": "2"}).json()
    assert (report["jobs"], report["rows"]) == (1, len(rows))
    assert report["agreement"] == pytest.approx(same / len(rows))


def test_a_shadowed_regressor_is_compared_by_its_absolute_differences(
    engine: Engine, settings: Settings, models: dict[str, ModelInfo], ops: Tenant,
    tenant: Tenant, worker: WorkerProcess
) -> None:
    with registered_regressors(engine, settings) as versions:
        # Promoted already: version 2 serves, version 1 shadows (compare reads either way).
        set_rollout(ops, versions.name, {"weights": {"2": 100},
                                         "shadow": {"version": "1", "percent": 100}})
        sent = {}
        for seed in range(8):
            rows = [[round(v / 10, 4) for v in row] for row in iris_rows(3, 100 + seed)]
            sent[tenant.submit(versions.name, rows)] = rows
        for job_id in sent:
            assert tenant.wait(job_id)["version"] == "2"
            assert shadow_of(ops, job_id)["version"] == "1"
        rows = [row for batch in sent.values() for row in batch]
        diffs = [abs(a - b) for a, b in zip(versions.predict("1", rows),
                                             versions.predict("2", rows), strict=True)]
        report = ops.get(f"/v1/models/{versions.name}/compare",
                         params={"baseline": "1", "candidate": "2"}).json()
        assert (report["kind"], report["jobs"], report["rows"]) == ("regressor", 8, len(rows))
        assert report["mean_abs_diff"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-6)
        assert report["max_abs_diff"] == pytest.approx(max(diffs), rel=1e-6)
        assert report["agreement"] == 0  # two different regressors never give equal values
        assert "confusion" not in report
