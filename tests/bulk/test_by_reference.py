"""Bulk jobs by reference: the input names a file under the data root (.npy, Parquet, CSV),
each worker reads its own chunks; the result may be written to a file there too."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
import redis
from sqlalchemy import Engine, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=100, bulk_ref_chunk_rows=300,
                                       bulk_window=2))
    yield live
    live.stop()


@pytest.fixture
def root(settings: Settings) -> Iterator[Path]:
    """A directory of this test's own under the data root; removed afterwards."""
    here = Path(settings.data_root) / uuid.uuid4().hex
    here.mkdir()
    yield here
    for path in sorted(here.rglob("*"), reverse=True):
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    here.rmdir()


def rel(path: Path, settings: Settings) -> str:
    return path.relative_to(settings.data_root).as_posix()


def submit(client: Tenant, **body: object) -> dict[str, object]:
    response = client.post("/v1/jobs", json={"model": "iris", **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def refused(client: Tenant, **body: object) -> dict[str, str]:
    response = client.post("/v1/jobs", json={"model": "iris", **body})
    assert response.status_code == 400, response.text
    return response.json()["error"]  # type: ignore[no-any-return]


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
                 output=rel(root / "preds.npy", settings))
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["rows_total"] == done["rows_done"] == 2000
    assert np.load(root / "preds.npy").tolist() == expected(models, rows)
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


def test_paths_outside_the_data_root_are_refused(
    client: Tenant, root: Path, settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.npy"
    np.save(outside, iris_rows(10))
    os.symlink(outside, root / "link.npy")
    name = rel(root, settings)
    error = refused(client, input=f"{name}/../../secret.npy")
    assert error["field"] == "input" and "'..'" in error["message"]
    error = refused(client, input=str(outside))
    assert "absolute path outside the data root" in error["message"]
    error = refused(client, input=f"{name}/link.npy")
    assert "leads outside the data root" in error["message"]
    error = refused(client, input=f"{name}/missing.npy")
    assert "no such file" in error["message"]
    np.save(root / "ok.npy", iris_rows(10))
    error = refused(client, input=f"{name}/ok.npy", output="../out.npy")
    assert error["field"] == "output" and "'..'" in error["message"]
    error = refused(client, input=f"{name}/ok.npy", inputs=[[1, 2, 3, 4]])
    assert "not both" in error["message"]
    # An absolute path inside the root is the same file as its relative name.
    assert client.post("/v1/jobs", json={"model": "iris", "input": str(root / "ok.npy")}
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
    engine: Engine, settings: Settings, models: dict[str, ModelInfo], root: Path
) -> None:
    """The last chunk committed, then its worker died before writing the file: the job stays
    running; the reconciler's sweep sends the last chunk again, and the worker that gets it
    writes the file, then the job succeeds (with its webhook event, once)."""
    from datetime import timedelta

    from service.bulk import refs
    from service.bulk.parsing import Bounds
    from service.core.times import utcnow
    from service.jobs import chunks, recovery
    from service.jobs.lifecycle import JobRequest
    from service.jobs.submit import make_submitter
    from workers.batching import Runner
    from workers.bulkrun import ChunkRunner
    from workers.modelcore import predict

    rows = iris_rows(500, seed=31)
    np.save(root / "rows.npy", rows)
    ref = refs.plan(settings.data_root, rel(root / "rows.npy", settings),
                    rel(root / "out.npy", settings), models["iris"], Bounds(300, 10_000))
    client = redis.Redis.from_url(settings.redis_url)
    job_id = make_submitter(settings, engine, client, None).reference(
        JobRequest("recovery", models["iris"]), ref, "").id
    client.close()
    runner = Runner(engine, model_dir=settings.model_dir, data_root=settings.data_root)
    assert ChunkRunner(runner).run([chunks.chunk_id(job_id, 0)], None) == 300
    with engine.begin() as conn:  # the last chunk, as a worker that dies right after it does
        claimed = chunks.claim(conn, job_id, 1, 60)
        assert claimed is not None
        claimed = claimed.__class__(**{**claimed.__dict__, "inputs": rows[300:]})
        out = predict(joblib.load(models["iris"].artifact_path), models["iris"], rows[300:])
        done = chunks.finish(conn, claimed, out)
        assert done is not None and done.status == "running" and done.output == "/".join(
            [root.name, "out.npy"])
    assert not (root / "out.npy").exists()
    later = utcnow() + timedelta(seconds=5)
    with engine.begin() as conn:
        assert chunks.sweep(conn, recovery.Cutoffs(utcnow() - timedelta(seconds=60),
                                                   utcnow()), 2, 3, 100)[0] == []  # too soon
        send, _failed = chunks.sweep(conn, recovery.Cutoffs(later, later), 2, 3, 100)
    assert send == [(job_id, "predict.normal", 1)]
    assert ChunkRunner(runner).run([chunks.chunk_id(job_id, 1)], None) == 0
    assert np.load(root / "out.npy").tolist() == expected(models, rows)
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar() == \
            "succeeded"
    runner.engine.dispose()

