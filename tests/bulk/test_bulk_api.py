"""Bulk jobs over HTTP: CSV, NDJSON, .npy, Parquet and Arrow bodies in, any result format out."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator

import joblib
import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=300, bulk_window=2))
    yield live
    live.stop()


def iris_rows(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(n, 4)), 2)


def as_csv(rows: np.ndarray, names: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(names)
    writer.writerows(rows.tolist())
    return out.getvalue().encode()


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy header as a client could write it, whatever shape it claims."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    return out.getvalue()


def upload(client: Tenant, body: bytes, mimetype: str, query: str = "model=iris"
           ) -> dict[str, object]:
    response = client.post(f"/v1/jobs?{query}", data=body,
                           headers={"Content-Type": mimetype})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_csv_upload_runs_chunk_by_chunk_and_every_format_matches_the_model(
    client: Tenant, models: dict[str, ModelInfo], worker: object
) -> None:
    iris = models["iris"]
    rows = iris_rows(2000)
    # Columns in another order than the model's: the header says which is which.
    names = list(reversed(iris.feature_names))
    job = upload(client, as_csv(rows[:, ::-1], names), "text/csv")
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["rows_total"] == done["rows_done"] == 2000 and done["percent"] == 100
    model = joblib.load(iris.artifact_path)
    expected = model.predict(rows).tolist()
    result = client.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["predictions"] == expected
    assert np.allclose(result["probabilities"], model.predict_proba(rows))
    assert result["sha256"] == iris.sha256
    lines = client.get(f"/v1/jobs/{job['id']}/result",
                       headers={"Accept": "application/x-ndjson"}).text.splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == expected
    table = list(csv.reader(io.StringIO(client.get(
        f"/v1/jobs/{job['id']}/result", headers={"Accept": "text/csv"}).text)))
    assert table[0] == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
    assert [r[0] for r in table[1:]] == expected
    # .npy holds numbers: string labels are refused, naming the formats that keep them
    npy = client.get(f"/v1/jobs/{job['id']}/result", headers={"Accept": "application/x-npy"})
    assert npy.status_code == 406 and "text/csv" in npy.json()["error"]["message"]
    refused = client.get(f"/v1/jobs/{job['id']}/result", headers={"Accept": "image/png"})
    assert refused.status_code == 406 and refused.json()["error"]["code"] == "not_acceptable"


def test_ndjson_and_npy_uploads(client: Tenant, models: dict[str, ModelInfo],
                                worker: object) -> None:
    diabetes = models["diabetes"]
    model = joblib.load(diabetes.artifact_path)
    rows = np.random.default_rng(3).normal(0, 0.05, size=(700, 10))
    names = diabetes.feature_names
    lines = [json.dumps(dict(zip(names, r, strict=True))) if i % 2 else json.dumps(list(r))
             for i, r in enumerate(rows.tolist())]
    buffer = io.BytesIO()
    np.save(buffer, rows.astype(np.float32))
    for body, mimetype, expected in [
        (("\n".join(lines) + "\n").encode(), "application/x-ndjson", rows),
        (buffer.getvalue(), "application/x-npy", rows.astype(np.float32).astype(np.float64)),
    ]:
        job = upload(client, body, mimetype, "model=diabetes")
        assert client.wait(str(job["id"]), timeout=120)["status"] == "succeeded"
        got = client.get(f"/v1/jobs/{job['id']}/result").json()["predictions"]
        assert np.allclose(got, model.predict(expected))


def test_parquet_in_and_out(client: Tenant, models: dict[str, ModelInfo], worker: object
                            ) -> None:
    """A Parquet body (columns in any order, extra ones ignored) becomes a bulk job, and its
    result comes back as Parquet: prediction and p_<label> columns, one row group a chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    iris = models["iris"]
    rows = iris_rows(1000, seed=11)
    columns = {name: rows[:, i] for i, name in enumerate(iris.feature_names)}
    table = pa.table({"row_id": np.arange(1000), **dict(reversed(list(columns.items())))})
    body = io.BytesIO()
    pq.write_table(table, body, row_group_size=400)
    job = upload(client, body.getvalue(), "application/vnd.apache.parquet")
    assert client.wait(str(job["id"]), timeout=120)["status"] == "succeeded"
    answer = client.get(f"/v1/jobs/{job['id']}/result",
                        headers={"Accept": "application/vnd.apache.parquet"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == \
        "application/vnd.apache.parquet"
    result = pq.read_table(io.BytesIO(answer.content))
    model = joblib.load(iris.artifact_path)
    assert result.column("prediction").to_pylist() == model.predict(rows).tolist()
    assert result.column_names == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
    assert np.allclose(result.column("p_virginica").to_numpy(), model.predict_proba(rows)[:, 2])


def arrow_stream(columns: dict[str, object], max_chunksize: int = 250) -> bytes:
    import pyarrow as pa

    table = pa.table(columns)
    out = io.BytesIO()
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    return out.getvalue()


def test_arrow_in_and_out_and_in_every_other_format(
    client: Tenant, models: dict[str, ModelInfo], worker: object
) -> None:
    """An Arrow IPC stream (columns in any order, extra ones ignored, batches of any size)
    becomes a bulk job; its result comes back as an Arrow stream with Parquet's columns, one
    record batch a chunk, and equals the model's predictions in every format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    iris = models["iris"]
    rows = iris_rows(1000, seed=13)
    columns = {name: rows[:, i] for i, name in enumerate(iris.feature_names)}
    body = arrow_stream({"row_id": np.arange(1000), **dict(reversed(list(columns.items())))})
    job = upload(client, body, "application/vnd.apache.arrow.stream")
    assert client.wait(str(job["id"]), timeout=120)["status"] == "succeeded"
    model = joblib.load(iris.artifact_path)
    expected = model.predict(rows).tolist()
    answer = client.get(f"/v1/jobs/{job['id']}/result",
                        headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == \
        "application/vnd.apache.arrow.stream"
    reader = pa.ipc.open_stream(answer.content)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [300, 300, 300, 100]  # the chunks
    result = pa.Table.from_batches(batches)
    assert result.column_names == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
    assert result.column("prediction").to_pylist() == expected
    assert np.allclose(np.column_stack([result.column(f"p_{label}").to_numpy()
                                        for label in iris.labels or []]),
                       model.predict_proba(rows))
    parquet = pq.read_table(io.BytesIO(client.get(
        f"/v1/jobs/{job['id']}/result",
        headers={"Accept": "application/vnd.apache.parquet"}).content))
    assert parquet.equals(result.replace_schema_metadata(parquet.schema.metadata))
    assert client.get(f"/v1/jobs/{job['id']}/result").json()["predictions"] == expected
    table = list(csv.reader(io.StringIO(client.get(
        f"/v1/jobs/{job['id']}/result", headers={"Accept": "text/csv"}).text)))
    assert [r[0] for r in table[1:]] == expected
    # The Arrow file format is read too (what a `.arrow` file usually holds), not written.
    file_body = io.BytesIO()
    with pa.ipc.new_file(file_body, pa.table(columns).schema) as writer:
        writer.write_table(pa.table(columns))
    again = upload(client, file_body.getvalue(), "application/vnd.apache.arrow.file")
    assert client.wait(str(again["id"]), timeout=120)["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{again['id']}/result").json()["predictions"] == expected
    refused = client.get(f"/v1/jobs/{again['id']}/result",
                         headers={"Accept": "application/vnd.apache.arrow.file"})
    assert refused.status_code == 406
    spec = client.get("/openapi.json").json()["paths"]
    assert {"application/vnd.apache.arrow.stream", "application/vnd.apache.arrow.file"} <= \
        set(spec["/v1/jobs"]["post"]["requestBody"]["content"])
    result_types = spec["/v1/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"]
    assert "application/vnd.apache.arrow.stream" in result_types
    assert "application/vnd.apache.arrow.file" not in result_types


ARROW_ROWS = {"sepal_length": [5.1, 6.2], "sepal_width": [3.5, 2.9],
              "petal_length": [1.4, 4.3], "petal_width": [0.2, 1.3]}


@pytest.mark.parametrize(("body", "mimetype", "field", "words"), [
    (b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,x,4\n", "text/csv",
     "row 2", "line 3: column 'petal_length' is 'x', not a number"),
    (b"sepal_length,sepal_width,petal_length,petal_width\n" + b"1,2,3,4\n" * 700 + b"1,2,3\n",
     "text/csv", "row 701", "3 fields; the header has 4"),
    (b"sepal_length,sepal_width,petal_length,colour\n1,2,3,4\n", "text/csv", "header",
     "unknown column 'colour'"),
    (b"[1,2,3,4]\n[1,2,3,NaN]\n", "application/x-ndjson", "row 2", "finite"),
    (b'[1,2,3,4]\n{"sepal_length": 1}\n', "application/x-ndjson", "row 2", "missing feature"),
    (b"[1,2,3,4]\n[1,2\n", "application/x-ndjson", "row 2", "not a JSON value"),
    (b"not numpy", "application/x-npy", "inputs", "not a .npy array"),
    (b"", "text/csv", "inputs", "empty"),
    # A header that promises no rows, or a negative number of them, is not an empty job.
    (npy_header((-1, 4)), "application/x-npy", "inputs", "shape (-1, 4)"),
    (npy_header((0, 4)), "application/x-npy", "inputs", "shape (0, 4)"),
    (npy_header((2, 3)) + bytes(48), "application/x-npy", "inputs", "shape (2, 3)"),
    (b"PAR1 not really", "application/vnd.apache.parquet", "inputs", "not a Parquet file"),
    (arrow_stream({k: v for k, v in ARROW_ROWS.items() if k != "petal_width"}),
     "application/vnd.apache.arrow.stream", "header", "missing column 'petal_width'"),
    (arrow_stream({**ARROW_ROWS, "sepal_width": ["3.5", "2.9"]}),
     "application/vnd.apache.arrow.stream", "header",
     "column 'sepal_width' holds string, not numbers"),
    (arrow_stream({**ARROW_ROWS, "petal_length": [1.4, None]}),
     "application/vnd.apache.arrow.stream", "row 2", "finite numbers only (no nulls)"),
    (b"ARROW1\0\0garbage", "application/vnd.apache.arrow.file", "inputs",
     "not an Arrow IPC stream"),
])
def test_the_first_bad_row_is_named_and_no_job_is_created(
    client: Tenant, engine: Engine, body: bytes, mimetype: str, field: str, words: str
) -> None:
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(job_chunks)).scalar_one()
    response = client.post("/v1/jobs?model=iris", data=body, headers={"Content-Type": mimetype})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field and words in error["message"], error
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs).where(
            jobs.c.tenant == client.name)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(job_chunks)).scalar_one() == before


def test_bulk_options_are_checked(client: Tenant) -> None:
    for query, field in [("", "model"), ("model=iris&colour=red", "colour"),
                         ("model=iris&priority=urgent", "priority"),
                         ("model=iris&keep_inputs=maybe", "keep_inputs")]:
        response = client.post(f"/v1/jobs?{query}", data=b"a\n1\n",
                               headers={"Content-Type": "text/csv"})
        assert response.status_code == 400 and response.json()["error"]["field"] == field


def test_interactive_jobs_overtake_a_running_bulk_job(
    client: Tenant, worker: object, settings: Settings
) -> None:
    """Each interactive job waits for at most a chunk per worker process, not for the bulk
    job: they all finish while it still runs. The latency is printed, not asserted tightly."""
    rows = np.column_stack([np.full(15000, 200.0), np.zeros(15000)])  # 200 ms per 300-row chunk
    body = io.BytesIO()
    np.save(body, rows)
    bulk = upload(client, body.getvalue(), "application/x-npy", "model=sleepy")
    latencies = []
    while client.get(f"/v1/jobs/{bulk['id']}").json()["rows_done"] == 0:
        time.sleep(0.05)
    for _ in range(8):
        started = time.monotonic()
        job_id = client.submit("iris", [[5.1, 3.5, 1.4, 0.2]], priority="interactive")
        assert client.wait(job_id, timeout=60)["status"] == "succeeded"
        latencies.append(time.monotonic() - started)
    state = client.get(f"/v1/jobs/{bulk['id']}").json()
    print(f"\ninteractive latency during a bulk job: median {np.median(latencies) * 1000:.0f} ms,"
          f" max {max(latencies) * 1000:.0f} ms (bulk job at {state['percent']}%)")
    assert state["status"] == "running" and state["rows_done"] < 15000
    assert max(latencies) < 10  # generous: a chunk takes 0.2 s
    assert client.wait(str(bulk["id"]), timeout=120)["status"] == "succeeded"


def test_an_upload_over_the_limit_answers_413_and_leaves_nothing(
    settings: Settings, engine: Engine, live_server, models: dict[str, ModelInfo]  # type: ignore[no-untyped-def]
) -> None:
    small = live_server(settings.replace(max_upload_bytes=5000, bulk_chunk_rows=50))
    gen = make_tenant(engine, small.url)
    client = next(gen)
    try:
        with engine.connect() as conn:
            before = conn.execute(select(func.count()).select_from(job_chunks)).scalar_one()
        body = as_csv(iris_rows(1000), models["iris"].feature_names)  # ~20 kB
        response = client.post("/v1/jobs?model=iris", data=body,
                               headers={"Content-Type": "text/csv"})
        assert response.status_code == 413, response.text
        assert response.json()["error"]["message"] == "request body exceeds 5000 bytes"
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(job_chunks)).scalar_one() \
                == before
            assert conn.execute(select(func.count()).select_from(jobs).where(
                jobs.c.tenant == client.name)).scalar_one() == 0
    finally:
        for _ in gen:
            pass


def test_a_row_the_model_fails_on_is_named_by_its_number_in_the_job(
    client: Tenant, models: dict[str, ModelInfo], worker: object,
) -> None:
    """The fragile model takes sqrt of its inputs: a negative value at row 1,502 (chunk 5
    of 300-row chunks) fails the job, and the error names the row, as upload checks do."""
    rows = np.abs(iris_rows(2000, seed=12))
    rows[1501, 2] = -4.0
    names = models["fragile"].feature_names
    job = upload(client, as_csv(rows, names), "text/csv", "model=fragile")
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "failed", done
    assert str(done["error"]).startswith("prediction failed at row 1,502 (chunk 5): "), done
