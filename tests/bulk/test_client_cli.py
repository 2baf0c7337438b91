"""The command line client and the Python client, end to end with a real worker."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pyarrow.parquet as pq
import pytest

from service.client import ApiError, Client
from service.models.registry import ModelInfo
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.support.processes import ROOT
from tests.support.tenants import Tenant


def predq(tenant: Tenant, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREDQ_URL": tenant.base_url,
           "PREDQ_API_KEY": tenant.key}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_a_200k_row_csv_through_the_cli_matches_the_model(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object, tmp_path: Path
) -> None:
    iris = models["iris"]
    rows = iris_rows(200_000, seed=11)
    source = tmp_path / "rows.csv"
    source.write_bytes(as_csv(rows, iris.feature_names))
    out = tmp_path / "predictions.csv"
    done = predq(tenant, "submit", "--model", "iris", "--input", str(source), "--wait",
                 "-o", str(out))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert f"{job_id} succeeded" in done.stderr
    # Not a terminal: plain progress lines, the last of each naming all of it and its rate.
    assert "job: 200,000 of 200,000 rows (100%)" in done.stderr
    assert "upload: " in done.stderr and "MB (100%)" in done.stderr and "MB/s" in done.stderr
    with open(out, newline="") as fh:
        table = list(csv.reader(fh))
    expected = joblib.load(iris.artifact_path).predict(rows).tolist()
    assert [r[0] for r in table[1:]] == expected
    shown = json.loads(predq(tenant, "status", job_id).stdout)
    assert shown["rows_done"] == shown["rows_total"] == 200_000
    parquet = tmp_path / "predictions.parquet"
    assert predq(tenant, "result", job_id, "-o", str(parquet)).returncode == 0
    assert pq.read_table(parquet).column("prediction").to_pylist() == expected
    npy = predq(tenant, "result", job_id, "-o", str(tmp_path / "predictions.npy"))
    assert npy.returncode == 1 and "holds numbers only" in npy.stderr  # the labels are strings


def test_the_python_client_submits_waits_and_reads(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object, tmp_path: Path
) -> None:
    client = Client(tenant.base_url, tenant.key)
    job_id = client.submit("iris", inputs=[[5.1, 3.5, 1.4, 0.2]])
    assert client.wait(job_id, timeout=60)["status"] == "succeeded"
    assert client.result(job_id)["predictions"] == ["setosa"]  # type: ignore[index]
    rows = np.random.default_rng(5).normal(0, 0.05, size=(500, 10))
    path = tmp_path / "rows.npy"
    np.save(path, rows)
    seen: list[tuple[int, int]] = []
    bulk_id = client.submit("diabetes", path=str(path), idempotency_key="nightly-1",
                            progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert client.submit("diabetes", path=str(path), idempotency_key="nightly-1") == bulk_id
    assert client.wait(bulk_id, timeout=120)["status"] == "succeeded"
    parquet = client.result(bulk_id, str(tmp_path / "out.parquet"))
    import pyarrow.parquet as pq

    got = pq.read_table(parquet).column("prediction").to_pylist()
    assert np.allclose(got, joblib.load(models["diabetes"].artifact_path).predict(rows))
    with pytest.raises(ApiError) as refused:
        client.submit("nope", inputs=[[1]])
    assert refused.value.status == 404 and refused.value.code == "model_not_found"


def test_parquet_input_and_cancel_from_the_cli(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x0": [10000.0] * 1000, "x1": [1.0] * 1000})  # sleepy: 10 s a chunk
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    submitted = predq(tenant, "submit", "--model", "sleepy", "--input", str(path))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert json.loads(predq(tenant, "status", job_id).stdout)["rows_total"] == 1000
    cancelled = predq(tenant, "cancel", job_id)  # queued or running: 10 s is long enough
    assert cancelled.stdout.strip() == "cancelled", cancelled.stderr
    again = predq(tenant, "cancel", job_id)
    assert again.returncode == 1 and "409 conflict" in again.stderr
    missing = predq(tenant, "status", "no-such-job")
    assert missing.returncode == 1 and "404 job_not_found" in missing.stderr
    final = Client(tenant.base_url, tenant.key).wait(job_id, timeout=60)
    assert final["status"] == "cancelled" and final["rows_done"] == 0  # its chunk was dropped


def test_arrow_files_in_and_out_through_the_cli(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object, tmp_path: Path
) -> None:
    """`.arrow` goes up as an Arrow stream, whether the file holds the stream or the file
    format (as `pyarrow.feather` and `new_file` write it), and `-o y.arrow` comes back as one."""
    import pyarrow as pa
    import pyarrow.feather as feather

    iris = models["iris"]
    rows = iris_rows(2000, seed=17)
    table = pa.table({name: rows[:, i] for i, name in enumerate(iris.feature_names)})
    expected = joblib.load(iris.artifact_path).predict(rows).tolist()
    stream = tmp_path / "rows.arrow"
    with pa.OSFile(str(stream), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=700)
    feather_file = tmp_path / "rows-file.arrow"
    feather.write_feather(table, str(feather_file))  # the file format, LZ4-compressed
    for source in (stream, feather_file):
        out = tmp_path / f"{source.stem}-predictions.arrow"
        done = predq(tenant, "submit", "--model", "iris", "--input", str(source), "--wait",
                     "-o", str(out))
        assert done.returncode == 0, done.stderr
        with pa.OSFile(str(out), "rb") as result:
            got = pa.ipc.open_stream(result).read_all()
        assert got.column("prediction").to_pylist() == expected
        assert got.column_names == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
