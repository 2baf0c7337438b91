"""Bulk jobs by reference: the input names a file in the tenant's directory under the data
root (.npy, Parquet, CSV), each worker reads its own chunks; the result may be written to a
file there too."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from sqlalchemy import Engine, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.support.dataroot import (
    chunk_runner,
    refused,
    rel,
    run_all,
    submit,
    tenant_home,
    unsent_job,
)
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=100, bulk_ref_chunk_rows=300,
                                       bulk_window=2))
    yield live
    live.stop()


@pytest.fixture
def root(settings: Settings, client: Tenant) -> Iterator[Path]:
    """The test's tenant's directory under the data root; removed afterwards."""
    yield from tenant_home(settings, client.name)


def expected(models: dict[str, ModelInfo], rows: np.ndarray) -> list[object]:
    return joblib.load(models["iris"].artifact_path).predict(rows).tolist()  # type: ignore[no-any-return]


def test_npy_by_reference_is_read_by_the_workers_and_equals_the_model(
    client: Tenant, models: dict[str, ModelInfo], worker: object, root: Path,
    settings: Settings, engine: Engine
) -> None:
    rows = iris_rows(1000, seed=21)
    np.save(root / "rows.npy", rows.astype(np.float32))
    job = submit(client, input=rel(root / "rows.npy", settings))
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["rows_total"] == done["rows_done"] == 1000
    result = client.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["predictions"] == expected(models, rows.astype(np.float32).astype(np.float64))
    with engine.connect() as conn:
        stored = conn.execute(select(job_chunks.c.n_rows, job_chunks.c.start, job_chunks.c.stop)
                              .where(job_chunks.c.job_id == job["id"])
                              .order_by(job_chunks.c.seq)).all()
    # The API stored no rows: row ranges of the file, one a chunk by reference of 300.
    assert [tuple(r) for r in stored] == [(300, 0, 300), (300, 300, 600), (300, 600, 900),
                                          (100, 900, 1000)]


def test_parquet_by_reference_reads_row_groups_and_writes_a_parquet_output(
    client: Tenant, models: dict[str, ModelInfo], worker: object, root: Path,
    settings: Settings
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = iris_rows(1100, seed=22)
    names = models["iris"].feature_names
    table = pa.table({"id": np.arange(1100),
                      **{name: rows[:, i] for i, name in reversed(list(enumerate(names)))}})
    pq.write_table(table, root / "rows.parquet", row_group_size=100)
    job = submit(client, input=rel(root / "rows.parquet", settings),
                 output=rel(root / "out" / "preds.parquet", settings))
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "succeeded", done
    written = pq.read_table(root / "out" / "preds.parquet")
    assert written.column("prediction").to_pylist() == expected(models, rows)
    assert written.column_names == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
    assert [p.name for p in (root / "out").iterdir()] == ["preds.parquet"]  # no temp file left
    result = client.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["predictions"] == expected(models, rows)


def test_csv_by_reference_is_cut_at_line_boundaries_and_counted_as_read(
    client: Tenant, models: dict[str, ModelInfo], worker: object, root: Path,
    settings: Settings, engine: Engine
) -> None:
    rows = iris_rows(2000, seed=23)
    # Lines of uneven length: a byte range starts mid-line and ends mid-line.
    body = as_csv(rows[:, ::-1], list(reversed(models["iris"].feature_names)))
    body = body.replace(b"\n", b"\n", 1).replace(b",1.5,", b",1.50000000,")
    (root / "rows.csv").write_bytes(body)
    job = submit(client, input=rel(root / "rows.csv", settings),
                 output=rel(root / "preds.parquet", settings))
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["rows_total"] == done["rows_done"] == 2000
    written = pq.read_table(root / "preds.parquet").column("prediction").to_pylist()
    assert written == expected(models, rows)
    with engine.connect() as conn:
        n_chunks = conn.execute(select(jobs.c.n_chunks).where(jobs.c.id == job["id"])).scalar()
    assert n_chunks and n_chunks > 1


def test_a_bad_row_in_a_referenced_file_fails_the_job_naming_it(
    client: Tenant, worker: object, root: Path, settings: Settings
) -> None:
    rows = iris_rows(700, seed=24)
    rows[450, 2] = np.nan
    np.save(root / "bad.npy", rows)
    job = submit(client, input=rel(root / "bad.npy", settings))
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "failed"
    assert "row 451" in str(done["error"]) and "finite" in str(done["error"])


def test_paths_outside_the_tenants_directory_are_refused(
    client: Tenant, root: Path, settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.npy"
    np.save(outside, iris_rows(10))
    os.symlink(outside, root / "link.npy")
    error = refused(client, input="../../secret.npy")
    assert error["field"] == "input" and "'..'" in error["message"]
    error = refused(client, input=str(outside))
    assert "is an absolute path" in error["message"]
    error = refused(client, input="link.npy")
    assert "leads outside your directory" in error["message"]
    error = refused(client, input="missing.npy")
    assert error["message"] == "input: 'missing.npy': no such file"
    np.save(root / "ok.npy", iris_rows(10))
    error = refused(client, input="ok.npy", output="../out.npy")
    assert error["field"] == "output" and "'..'" in error["message"]
    error = refused(client, input="ok.npy", inputs=[[1, 2, 3, 4]])
    assert "not both" in error["message"]
    # Even an absolute path inside the tenant's own directory: names are relative to it.
    assert "is an absolute path" in refused(client, input=str(root / "ok.npy"))["message"]
    assert client.post("/v1/jobs", json={"model": "iris", "input": "./ok.npy"}
                       ).status_code == 202


def test_without_a_data_root_jobs_by_reference_are_refused(
    settings: Settings, engine: Engine, live_server: type[LiveServer],
    models: dict[str, ModelInfo]
) -> None:
    server = live_server(settings.replace(data_root=""))
    for client in make_tenant(engine, server.url):
        error = refused(client, input="rows.npy")
        assert error["field"] == "input" and "PREDQ_DATA_ROOT" in error["message"]


def test_a_header_that_does_not_fit_the_model_is_refused_at_submit(
    client: Tenant, root: Path, settings: Settings
) -> None:
    np.save(root / "wide.npy", np.zeros((5, 7)))
    assert "needs (rows, 4)" in refused(client, input=rel(root / "wide.npy", settings))["message"]
    (root / "rows.csv").write_bytes(b"a,b\n1,2\n")
    assert "unknown column 'a'" in refused(client, input=rel(root / "rows.csv", settings)
                                           )["message"]
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 4)))
    (root / "short.npy").write_bytes(buffer.getvalue()[:-8])
    assert "ends early" in refused(client, input=rel(root / "short.npy", settings))["message"]


def test_an_output_whose_writer_died_is_written_once_the_reconciler_sends_again(
    engine: Engine, settings: Settings, models: dict[str, ModelInfo], root: Path,
    client: Tenant
) -> None:
    """The last chunk committed, then its worker died before writing the file: the job stays
    running; the reconciler's sweep sends the last chunk again, and the worker that gets it
    writes the file, then the job succeeds (with its webhook event, once)."""
    from datetime import timedelta

    from service.bulk import outputs, refs
    from service.bulk.areas import Area
    from service.bulk.parsing import Bounds
    from service.core.messaging import chunk_id
    from service.core.times import utcnow
    from service.jobs import chunkclaims, chunksweep, recovery
    from service.jobs.ending import Ending
    from service.jobs.requests import JobRequest
    from service.jobs.submit import make_submitter
    from workers.batching import Runner
    from workers.bulkrun import ChunkRunner
    from workers.modelcore import ArtifactSource, ModelCache, predict

    rows = iris_rows(500, seed=31)
    np.save(root / "rows.npy", rows)
    area = Area(settings.data_root, client.name)
    with engine.connect() as conn:
        target = outputs.target(conn, area, "out.parquet", False)
    ref = refs.plan(area, "rows.npy", target, models["iris"], Bounds(300, 10_000))
    broker = redis.Redis.from_url(settings.redis_url)
    job_id = make_submitter(settings, engine, broker, None).reference(
        JobRequest(client.name, models["iris"]), ref, "").id
    broker.close()
    models_here = ModelCache(read=ArtifactSource(engine, settings.model_dir).read)
    runner = Runner(engine, models=models_here, data_root=settings.data_root)
    assert ChunkRunner(runner).run([chunk_id(job_id, 0)]) == 300
    with engine.begin() as conn:  # the last chunk, as a worker that dies right after it does
        claimed = chunkclaims.claim(conn, job_id, 1, 60)
        assert claimed is not None
        claimed = claimed.__class__(**{**claimed.__dict__, "inputs": rows[300:]})
        out = predict(joblib.load(models["iris"].artifact_path), models["iris"], rows[300:])
        done = chunkclaims.finish(conn, claimed, out)
        assert done is not None and done.last and done.output is not None
        assert outputs.Target.loads(done.output).path == f"{root.name}/out.parquet"
    assert not (root / "out.parquet").exists()
    later = utcnow() + timedelta(seconds=5)
    with engine.begin() as conn:
        soon, due = Ending(conn), Ending(conn)
        assert chunksweep.sweep(soon, recovery.Cutoffs(utcnow() - timedelta(seconds=60),
                                                       utcnow()), 3, 100)[0] == 0  # too soon
        chunksweep.sweep(due, recovery.Cutoffs(later, later), 3, 100)
    assert [(send.queue, send.ids) for send in due.sends] == [
        ("predict.chunks", [chunk_id(job_id, 1)])]
    assert ChunkRunner(runner).run([chunk_id(job_id, 1)]) == 0
    assert pq.read_table(root / "out.parquet").column("prediction").to_pylist() == \
        expected(models, rows)
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar() == \
            "succeeded"
    runner.engine.dispose()



def test_an_npy_input_replaced_by_a_fortran_ordered_array_mid_job_fails_the_job(
    client: Tenant, root: Path, engine: Engine, settings: Settings,
    models: dict[str, ModelInfo]
) -> None:
    """Each chunk's read checks the header again: the second chunk finds the file replaced
    (same shape, Fortran order, other values) and fails the job naming it, rather than
    predicting rows the job was not given."""
    from service.core.messaging import chunk_id

    rows = iris_rows(600, seed=32)
    np.save(root / "rows.npy", rows)
    job_id = unsent_job(engine, settings, models["iris"], client.name, "rows.npy")
    runner = chunk_runner(engine, settings)
    assert runner.run([chunk_id(job_id, 0)]) == 300
    np.save(root / "rows.npy", np.asfortranarray(rows[:, ::-1]))
    assert runner.run([chunk_id(job_id, 1)]) == 0
    status, error = run_all(runner, engine, job_id)
    assert status == "failed", error
    assert "input rows.npy: changed since the job was submitted" in str(error)
    assert "Fortran order" in str(error)
