"""Bulk jobs of a typed pipeline (the demo `churn`): CSV (an empty cell is missing,
true/false), NDJSON, Parquet and Arrow (string, dictionary, boolean and nullable columns),
uploaded and by reference, give the pipeline's own predictions on the same DataFrame; results
keep string labels in every format, and .npy answers 406."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.demo_typed import churn_frame
from service.models.registry import ModelInfo
from tests.api.test_typed_jobs import rows_of
from tests.support.dataroot import tenant_home
from tests.support.processes import ApiProcess, LiveServer, free_port
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=300, bulk_window=2))
    yield live
    live.stop()


@pytest.fixture
def frame() -> pd.DataFrame:
    data, _ = churn_frame(1000, seed=11)
    return data


def expected(models: dict[str, ModelInfo], frame: pd.DataFrame) -> list[object]:
    return joblib.load(models["churn"].artifact_path).predict(frame).tolist()  # type: ignore[no-any-return]


def upload(client: Tenant, body: bytes, mimetype: str) -> str:
    response = client.post("/v1/jobs?model=churn", data=body,
                           headers={"Content-Type": mimetype})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def as_csv(frame: pd.DataFrame) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(frame.columns)
    for row in rows_of(frame):  # missing: an empty cell; booleans as true/false
        writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v
                         for v in row.values()])
    return out.getvalue().encode()


def as_parquet(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, out, row_group_size=250)
    return out.getvalue()


def as_arrow(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    plan = table.column("plan").dictionary_encode()  # dictionary strings are strings too
    table = table.set_column(0, "plan", plan)
    out = io.BytesIO()
    with pa.ipc.new_stream(out, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=170):
            writer.write_batch(batch)
    return out.getvalue()


def as_ndjson(frame: pd.DataFrame) -> bytes:
    names = list(frame.columns)
    return "".join(json.dumps(row if i % 2 else [row[n] for n in names]) + "\n"
                   for i, row in enumerate(rows_of(frame))).encode()


@pytest.mark.parametrize(("encode", "mimetype"), [
    (as_csv, "text/csv"), (as_ndjson, "application/x-ndjson"),
    (as_parquet, "application/vnd.apache.parquet"),
    (as_arrow, "application/vnd.apache.arrow.stream"),
])
def test_every_bulk_format_gives_the_pipelines_own_predictions(
    client: Tenant, models: dict[str, ModelInfo], worker: object, frame: pd.DataFrame,
    encode: object, mimetype: str,
) -> None:
    assert frame["age"].isna().any()
    job_id = upload(client, encode(frame), mimetype)  # type: ignore[operator]
    done = client.wait(job_id, timeout=120)
    assert done["status"] == "succeeded", done
    assert done["rows_done"] == 1000
    assert client.get(f"/v1/jobs/{job_id}/result").json()["predictions"] == \
        expected(models, frame)


@pytest.fixture(scope="module")
def gunicorn_api(settings: Settings, engine: Engine,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    server = ApiProcess(settings.replace(port=free_port(), bulk_chunk_rows=300),
                        tmp_path_factory.mktemp("typed-csv") / "api.log")
    yield server
    server.stop()


@pytest.fixture
def gunicorn_client(engine: Engine, gunicorn_api: ApiProcess) -> Iterator[Tenant]:
    yield from make_tenant(engine, gunicorn_api.url)


def test_a_typed_csv_upload_to_predq_api_is_read_and_its_worker_lives(
    gunicorn_client: Tenant, gunicorn_api: ApiProcess, models: dict[str, ModelInfo],
    worker: object, frame: pd.DataFrame,
) -> None:
    """gunicorn's gevent worker: pyarrow's streaming CSV reader read the body from a thread
    of its own, and the API's worker died of SIGSEGV (no answer at all)."""
    job_id = upload(gunicorn_client, as_csv(frame), "text/csv")
    done = gunicorn_client.wait(job_id, timeout=120)
    assert done["status"] == "succeeded", done
    assert gunicorn_client.get(f"/v1/jobs/{job_id}/result").json()["predictions"] == \
        expected(models, frame)
    assert "SIGSEGV" not in gunicorn_api.log_path.read_text()


def test_typed_results_keep_their_labels_and_npy_is_refused(
    client: Tenant, models: dict[str, ModelInfo], worker: object, frame: pd.DataFrame,
) -> None:
    job_id = upload(client, as_parquet(frame), "application/vnd.apache.parquet")
    assert client.wait(job_id, timeout=120)["status"] == "succeeded"
    want = expected(models, frame)
    table = list(csv.reader(io.StringIO(client.get(
        f"/v1/jobs/{job_id}/result", headers={"Accept": "text/csv"}).text)))
    assert table[0] == ["prediction", "p_churn", "p_stay"]
    assert [r[0] for r in table[1:]] == want
    result = pq.read_table(io.BytesIO(client.get(
        f"/v1/jobs/{job_id}/result", headers={"Accept": "application/vnd.apache.parquet"}
    ).content))
    assert result.schema.field("prediction").type == pa.string()
    assert result.column("prediction").to_pylist() == want
    npy = client.get(f"/v1/jobs/{job_id}/result", headers={"Accept": "application/x-npy"})
    assert npy.status_code == 406 and "application/vnd.apache.parquet" in \
        npy.json()["error"]["message"]


@pytest.mark.parametrize(("body", "field", "reason"), [
    (b"plan,country,age,seats,monthly_spend,support_tickets,annual\n"
     b"pro,de,41,3,10.5,1,true\nbasic,fr,,three,1.0,0,false\n", "row 2.seats", "integer"),
    (b"plan,country,age,seats,monthly_spend,support_tickets,annual\n"
     b"pro,de,41,3,10.5,1,maybe\n", "row 1.annual", "boolean"),
    (b"plan,country,age,seats,monthly_spend,support_tickets\npro,de,41,3,10.5,1\n",
     "header", "missing column 'annual'"),
    (b"plan,country,age,seats,monthly_spend,support_tickets,annual,extra\n"
     b"pro,de,41,3,10.5,1,true,x\n", "header", "unknown column 'extra'"),
])
def test_a_bad_typed_value_names_its_row_column_and_type(
    client: Tenant, body: bytes, field: str, reason: str,
) -> None:
    response = client.post("/v1/jobs?model=churn", data=body,
                           headers={"Content-Type": "text/csv"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field and reason in error["message"], error


def test_a_npy_body_for_a_typed_model_names_the_formats_that_work(client: Tenant) -> None:
    body = io.BytesIO()
    np.save(body, np.zeros((3, 7)))
    response = client.post("/v1/jobs?model=churn", data=body.getvalue(),
                           headers={"Content-Type": "application/x-npy"})
    assert response.status_code == 400
    assert "CSV, NDJSON, Parquet or Arrow" in response.json()["error"]["message"]


@pytest.fixture
def root(settings: Settings, client: Tenant) -> Iterator[Path]:
    """The tenant's directory under the data root (its paths are relative to it)."""
    yield from tenant_home(settings, client.name)


@pytest.mark.parametrize(("suffix", "encode"), [(".parquet", as_parquet), (".csv", as_csv)])
def test_a_typed_file_by_reference_is_read_by_the_workers(
    client: Tenant, models: dict[str, ModelInfo], worker: object, frame: pd.DataFrame,
    root: Path, settings: Settings, suffix: str, encode: object,
) -> None:
    (root / f"rows{suffix}").write_bytes(encode(frame))  # type: ignore[operator]
    relative, out = f"rows{suffix}", "preds.csv"
    response = client.post("/v1/jobs", json={"model": "churn", "input": relative,
                                              "output": out})
    assert response.status_code == 202, response.text
    done = client.wait(str(response.json()["id"]), timeout=120)
    assert done["status"] == "succeeded", done
    written = list(csv.reader(io.StringIO((root / "preds.csv").read_text())))
    assert [r[0] for r in written[1:]] == expected(models, frame)
    refused = client.post("/v1/jobs", json={"model": "churn", "input": relative,
                                             "output": out.replace(".csv", ".npy")})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "output"
