"""The batch runner in-process, on the real database and real artifacts."""

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from sqlalchemy import Engine, delete, insert, select

from service.core import times
from service.jobs import lifecycle
from service.jobs.lifecycle import NewJob
from service.models import registry
from service.models.registry import ModelInfo
from service.store.db import jobs as jobs_table
from service.store.db import models as models_table
from workers.batching import Runner

TENANT = "batching"


@pytest.fixture
def runner(engine: Engine) -> Iterator[Runner]:
    yield Runner(engine)
    with engine.begin() as conn:
        conn.execute(delete(jobs_table).where(jobs_table.c.tenant == TENANT))


def _insert(engine: Engine, model: ModelInfo, *inputs: list[list[float]]) -> list[str]:
    new = [NewJob(TENANT, model.id, np.asarray(rows, dtype=np.float64)).with_id()
           for rows in inputs]
    with engine.begin() as conn:
        return lifecycle.insert_jobs(conn, new)


def _status(engine: Engine, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(jobs_table.c.id, jobs_table.c.status, jobs_table.c.error)
                            .where(jobs_table.c.id.in_(ids)))
        return {r.id: (r.status, r.error) for r in rows}


def test_one_bad_row_fails_its_own_job_and_not_its_batch_neighbours(
    engine: Engine, runner: Runner, models: dict[str, ModelInfo]
) -> None:
    fragile = models["fragile"]
    good1, bad, good2 = _insert(engine, fragile, [[5.1, 3.5, 1.4, 0.2]],
                                [[5.1, -3.5, 1.4, 0.2]], [[6.0, 3.0, 5.0, 2.0], [5, 3, 1, 0]])
    outcomes = {o.id: o for o in runner.run([good1, bad, good2])}
    status = _status(engine, [good1, bad, good2])
    assert status[good1][0] == status[good2][0] == "succeeded"
    assert status[bad][0] == "failed"
    error = status[bad][1]
    assert "prediction failed at inputs[0]: ValueError" in error and "NaN" in error
    model = joblib.load(fragile.artifact_path)
    assert outcomes[good2].result["predictions"] == model.predict(
        np.array([[6.0, 3.0, 5.0, 2.0], [5, 3, 1, 0]])).tolist()


def test_a_batch_groups_jobs_by_model_version(
    engine: Engine, runner: Runner, models: dict[str, ModelInfo]
) -> None:
    iris, diabetes = models["iris"], models["diabetes"]
    rows = np.random.default_rng(1).normal(size=(3, 10)).round(3).tolist()
    ids = _insert(engine, iris, [[5.1, 3.5, 1.4, 0.2]], [[6.7, 3.0, 5.2, 2.3]]) + _insert(
        engine, diabetes, rows[:1], rows[1:])
    outcomes = {o.id: o.result for o in runner.run(ids)}
    reg = joblib.load(diabetes.artifact_path)
    # Equal up to rounding: BLAS sums in another order for another batch size.
    np.testing.assert_allclose(outcomes[ids[2]]["predictions"], reg.predict(np.array(rows[:1])),
                               rtol=1e-9)
    np.testing.assert_allclose(outcomes[ids[3]]["predictions"], reg.predict(np.array(rows[1:])),
                               rtol=1e-9)
    assert outcomes[ids[0]]["predictions"] == ["setosa"]
    assert len(outcomes[ids[1]]["probabilities"][0]) == 3


def test_running_a_message_twice_writes_one_result(
    engine: Engine, runner: Runner, models: dict[str, ModelInfo]
) -> None:
    (job_id,) = _insert(engine, models["iris"], [[5.1, 3.5, 1.4, 0.2]])
    assert len(runner.run([job_id])) == 1
    with engine.connect() as conn:
        first = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).one()
    assert runner.run([job_id]) == []
    assert Runner(engine).run([job_id, job_id]) == []  # another process, same message
    with engine.connect() as conn:
        assert conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).one() == first


def test_message_for_a_missing_row_is_dropped(runner: Runner) -> None:
    assert runner.run(["00000000-0000-4000-8000-000000000000"]) == []


def test_artifact_with_wrong_sha256_fails_jobs_with_a_clear_error(
    engine: Engine, runner: Runner, models: dict[str, ModelInfo], tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.joblib"
    shutil.copy(models["iris"].artifact_path, tampered)
    os.chmod(tampered, 0o644)
    with open(tampered, "ab") as fh:
        fh.write(b"\0")
    info = dataclasses.replace(models["iris"], name="iris-tampered", artifact_path=str(tampered))
    row = {k: v for k, v in dataclasses.asdict(info).items() if k != "id"}
    row["input_schema"] = info.schema.to_json()
    with engine.begin() as conn:
        model_id = conn.execute(insert(models_table).returning(models_table.c.id),
                                {**row, "created_at": times.utcnow()}).scalar_one()
    try:
        (job_id,) = _insert(engine, dataclasses.replace(info, id=model_id), [[1, 2, 3, 4]])
        runner.run([job_id])
        status, error = _status(engine, [job_id])[job_id]
        assert status == "failed"
        assert "sha256" in error and "refusing to load" in error
    finally:
        with engine.begin() as conn:
            conn.execute(delete(jobs_table).where(jobs_table.c.model_id == model_id))
            conn.execute(delete(models_table).where(models_table.c.id == model_id))


def test_preload_loads_the_latest_models_before_any_job(
    engine: Engine, models: dict[str, ModelInfo]
) -> None:
    runner = Runner(engine)
    assert runner.preload(2) == 2
    with engine.connect() as conn:  # other tests may have registered models since the session began
        latest = sorted(registry.list_models(conn), key=lambda info: info.id)[-2:]
    assert all(runner.models.get(info) is runner.models.get(info) for info in latest)
    assert len(runner.models._models) == 2
