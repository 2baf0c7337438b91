"""A 100 MB line on a real `predq api` (gunicorn): refused with 400 naming the line after
reading at most its bound, nothing left behind, and the API process does not grow."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest
import requests
from sqlalchemy import Engine, func, select

from service.bulk import lines
from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.support.processes import ApiProcess, free_port
from tests.support.tenants import Tenant, make_tenant

MB = 1024 * 1024


@pytest.fixture(scope="module")
def api(settings: Settings, engine: Engine, models: dict[str, ModelInfo],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    server = ApiProcess(settings.replace(port=free_port(), bulk_chunk_rows=300),
                        tmp_path_factory.mktemp("long-lines") / "api.log")
    yield server
    server.stop()


@pytest.fixture
def client(engine: Engine, api: ApiProcess) -> Iterator[Tenant]:
    yield from make_tenant(engine, api.url)


def rss(api: ApiProcess) -> int:
    """Resident memory of the gunicorn master and its workers."""
    master = psutil.Process(api.proc.pid)
    return sum(p.memory_info().rss for p in [master, *master.children(recursive=True)])


def body(head: bytes, fill: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    """`head`, `size` bytes of `fill`, `tail`: made a megabyte at a time as it is sent."""
    yield head
    block = fill * (MB // len(fill))
    for _ in range(size // len(block)):
        yield block
    yield tail


def counts(engine: Engine, tenant: str) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(jobs).where(
                    jobs.c.tenant == tenant)).scalar_one(),
                conn.execute(select(func.count()).select_from(job_chunks)).scalar_one())


@pytest.mark.parametrize(("mimetype", "head", "fill", "line", "unit"), [
    ("application/x-ndjson", b"[5.1, 3.5, 1.4, 0.2]\n" * 1000 + b"[5.1, ", b"1.0, ", 1001,
     "bytes"),
    ("text/csv", b"sepal_length,sepal_width,petal_length,petal_width\n"
     + b"5.1,3.5,1.4,0.2\n" * 1000 + b"5.1,", b"1.0,", 1002, "characters"),
])
def test_a_100_mb_line_answers_400_naming_it_and_the_api_does_not_grow(
    client: Tenant, api: ApiProcess, engine: Engine, models: dict[str, ModelInfo],
    worker: object, mimetype: str, head: bytes, fill: bytes, line: int, unit: str,
) -> None:
    ordinary = as_csv(iris_rows(2000), models["iris"].feature_names)
    warm = client.post("/v1/jobs?model=iris", data=ordinary, headers={"Content-Type": "text/csv"})
    assert warm.status_code == 202, warm.text  # imports and buffers warmed up
    jobs_before, chunks_before = counts(engine, client.name)
    before = rss(api)
    # Not the tenant's session: its OpenAPI check of each answer cannot read a streamed body.
    response = requests.post(f"{api.url}/v1/jobs?model=iris", timeout=120,
                             data=body(head, fill, 100 * MB, b"1.0\n"),
                             headers={"Content-Type": mimetype,
                                      "Authorization": f"Bearer {client.key}"})
    grown = rss(api) - before
    print(f"\nAPI RSS {before / MB:.0f} MB before, grew {grown / MB:+.1f} MB")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    limit = lines.line_limit(models["iris"])
    assert error["code"] == "invalid_input" and error["field"] == "row 1001", error
    assert error["message"].startswith(f"row 1001: line {line}: longer than {limit:,} {unit}")
    assert grown < 50 * MB, f"the API grew by {grown / MB:.0f} MB"
    assert counts(engine, client.name) == (jobs_before, chunks_before)  # nothing left behind
    again = client.post("/v1/jobs?model=iris", data=ordinary, headers={"Content-Type": "text/csv"})
    assert again.status_code == 202, again.text
    for job in (warm, again):  # both run (and are not being written when the tenant goes)
        assert client.wait(job.json()["id"], timeout=120)["status"] == "succeeded"


@pytest.mark.parametrize("mimetype", ["application/x-ndjson", "text/csv"])
def test_a_line_just_under_the_bound_is_accepted(client: Tenant, models: dict[str, ModelInfo],
                                                 worker: object, mimetype: str) -> None:
    limit = lines.line_limit(models["iris"])
    if mimetype == "text/csv":
        head = b"sepal_length,sepal_width,petal_length,petal_width\n"
        row = b"5.1,3.5,1.4," + b" " * (limit - 16) + b"0.2"
    else:
        head, row = b"", b"[5.1, 3.5, 1.4, " + b" " * (limit - 21) + b"0.2]"
    assert len(row) == limit - 1
    response = client.post("/v1/jobs?model=iris", data=head + row + b"\n" + row + b"\n",
                           headers={"Content-Type": mimetype})
    assert response.status_code == 202, response.text
    done = client.wait(response.json()["id"], timeout=120)
    assert done["status"] == "succeeded" and done["rows_total"] == 2


def test_a_compressed_arrow_bomb_is_refused_before_it_is_decoded(
    client: Tenant, api: ApiProcess, engine: Engine, models: dict[str, ModelInfo],
    worker: object,
) -> None:
    """One ZSTD record batch of 10,000,001 constant rows is 40 KiB on the wire and would be
    hundreds of MB decoded: its row count is read from its header, before pyarrow decodes it
    (issue 29: the API grew from 1.1 to 3.2 GB)."""
    import io

    import numpy as np
    import pyarrow as pa

    ordinary = as_csv(iris_rows(2000), models["iris"].feature_names)
    assert client.post("/v1/jobs?model=iris", data=ordinary,
                       headers={"Content-Type": "text/csv"}).status_code == 202  # warmed
    n = 10_000_001  # one more than PREDQ_MAX_BULK_ROWS
    bomb = pa.table({name: pa.array(np.ones(n, dtype=np.int8))
                     for name in models["iris"].feature_names})
    out = io.BytesIO()
    with pa.ipc.new_stream(out, bomb.schema,
                           options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(bomb, max_chunksize=n)
    del bomb
    jobs_before, chunks_before = counts(engine, client.name)
    before = rss(api)
    response = requests.post(f"{api.url}/v1/jobs?model=iris", data=out.getvalue(), timeout=60,
                             headers={"Content-Type": "application/vnd.apache.arrow.stream",
                                      "Authorization": f"Bearer {client.key}"})
    grown = rss(api) - before
    print(f"\nArrow bomb of {len(out.getvalue()):,} bytes: API RSS {before / MB:.0f} MB "
          f"before, grew {grown / MB:+.1f} MB")
    assert response.status_code == 400, response.text
    assert "more than 10000000 rows" in response.json()["error"]["message"]
    assert grown < 50 * MB, f"the API grew by {grown / MB:.0f} MB"
    assert counts(engine, client.name) == (jobs_before, chunks_before)
