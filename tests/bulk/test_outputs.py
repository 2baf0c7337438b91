"""A job's output file replaces nothing it did not make unless told to, and never the input
of a running job, a read-only file or a file with a second hard link."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, update

from service.bulk import outputs
from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import jobs
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.bulk.test_by_reference import expected
from tests.support.dataroot import chunk_runner, refused, run_all, submit, tenant_home, unsent_job
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant
from workers.bulkrun import ChunkRunner


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=100, bulk_ref_chunk_rows=300))
    yield live
    live.stop()


@pytest.fixture
def root(settings: Settings, client: Tenant) -> Iterator[Path]:
    yield from tenant_home(settings, client.name)


@pytest.fixture
def runner(engine: Engine, settings: Settings) -> ChunkRunner:
    return chunk_runner(engine, settings)


def predictions(path: Path) -> list[object]:
    import pyarrow.parquet as pq

    return pq.read_table(path).column("prediction").to_pylist()  # type: ignore[no-any-return]


def test_an_existing_file_is_replaced_only_with_overwrite_and_never_a_read_only_one(
    client: Tenant, root: Path, worker: object, models: dict[str, ModelInfo]
) -> None:
    rows = iris_rows(200, seed=50)
    np.save(root / "rows.npy", rows)
    (root / "theirs.csv").write_text("not yours\n")
    error = refused(client, input="rows.npy", output="theirs.csv")
    assert error["field"] == "output" and "exists" in error["message"]
    assert (root / "theirs.csv").read_text() == "not yours\n"
    job = submit(client, input="rows.npy", output="theirs.csv", overwrite=True)
    assert client.wait(str(job["id"]), timeout=60)["status"] == "succeeded"
    assert (root / "theirs.csv").read_text().startswith("prediction,")
    (root / "locked.csv").write_text("0444\n")
    (root / "locked.csv").chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    error = refused(client, input="rows.npy", output="locked.csv", overwrite=True)
    assert error["field"] == "output" and "read-only" in error["message"]
    assert refused(client, input="rows.npy", output="x.csv", overwrite="yes")["field"] == \
        "overwrite"
    assert refused(client, input="rows.npy", overwrite=True)["field"] == "overwrite"


def test_the_input_of_a_running_job_is_never_replaced(
    client: Tenant, root: Path, engine: Engine, settings: Settings,
    models: dict[str, ModelInfo], runner: ChunkRunner
) -> None:
    """Job A reads in.csv. Another job of the tenant may not write over it, neither at
    submit nor when it finishes (the file appeared after its submit)."""
    names = models["iris"].feature_names
    (root / "in.csv").write_bytes(as_csv(iris_rows(200, seed=51), names))
    np.save(root / "other.npy", iris_rows(200, seed=52))
    reading = unsent_job(engine, settings, models["iris"], client.name, "in.csv")
    error = refused(client, input="other.npy", output="in.csv", overwrite=True)
    assert "input of a job still running" in error["message"] and reading in error["message"]
    # Submitted before late.csv existed; by the time they end, job `late` reads it.
    writer = unsent_job(engine, settings, models["iris"], client.name, "other.npy",
                        "late.csv", overwrite=True)
    careful = unsent_job(engine, settings, models["iris"], client.name, "other.npy",
                         "late.csv")
    theirs = as_csv(iris_rows(200, seed=53), names)
    (root / "late.csv").write_bytes(theirs)
    late = unsent_job(engine, settings, models["iris"], client.name, "late.csv")
    status, error_text = run_all(runner, engine, writer)
    assert status == "failed" and "could not write the output late.csv" in str(error_text)
    assert f"input of a job still running ({late})" in str(error_text)
    status, error_text = run_all(runner, engine, careful)
    assert status == "failed" and "this job did not make it" in str(error_text)
    assert (root / "late.csv").read_bytes() == theirs
    for job_id in (reading, late):  # both ran to the end, on the files they planned
        assert run_all(runner, engine, job_id) == ("succeeded", None)


def test_a_job_writes_its_own_output_again_after_its_writer_died(
    client: Tenant, root: Path, engine: Engine, settings: Settings,
    models: dict[str, ModelInfo], runner: ChunkRunner
) -> None:
    """The file a job linked into place is recorded as its own first: written again (the
    worker died before the job succeeded), it replaces that file, not refuses it."""
    rows = iris_rows(400, seed=54)
    np.save(root / "rows.npy", rows)
    job_id = unsent_job(engine, settings, models["iris"], client.name, "rows.npy",
                        "out.parquet")
    assert run_all(runner, engine, job_id) == ("succeeded", None)
    first = (root / "out.parquet").stat().st_ino
    outputs.write_output(engine, settings.data_root, job_id)
    assert predictions(root / "out.parquet") == expected(models, rows)
    assert (root / "out.parquet").stat().st_ino != first  # a new file, linked over its own
    assert sorted(p.name for p in root.iterdir()) == ["out.parquet", "rows.npy"]  # no .part


def test_a_job_stored_before_tenants_had_directories_still_runs_root_relative(
    client: Tenant, root: Path, engine: Engine, settings: Settings,
    models: dict[str, ModelInfo], runner: ChunkRunner
) -> None:
    """Its input reference and its output are relative to the whole root, in the form the
    API stored them before (no base, a plain output path): the worker reads and writes them
    there, confined to the root."""
    rows = iris_rows(350, seed=55)
    np.save(root / "old.npy", rows)
    job_id = unsent_job(engine, settings, models["iris"], client.name, "old.npy")
    legacy_in = json.dumps({"path": f"{root.name}/old.npy", "format": "npy", "offset": 128,
                            "columns": []})
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(
            input_ref=legacy_in, output_ref=f"{root.name}/old-out.parquet"))
    assert run_all(runner, engine, job_id) == ("succeeded", None)
    assert predictions(root / "old-out.parquet") == expected(models, rows)
